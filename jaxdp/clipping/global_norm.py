"""The global clip rule: each example's whole gradient is scaled to norm ≤ C.

    c_i = min(1, C / ‖g_i‖₂),   ‖g_i‖₂ over all parameters together,

the rule of Abadi et al. 2016 and the default (`dp.clip_rule='global'`).
Every unit of an example gets the same weight, so one weighted backward pass
can form the sum.
"""

import dataclasses
from typing import ClassVar

import jax.numpy as jnp

from jaxdp.clipping.per_example import Clipped
from jaxdp.clipping.per_example import clip_factors


@dataclasses.dataclass(frozen=True)
class GlobalNorm:
  """One bound C on the norm of the whole per-example gradient."""

  name: str = 'global'
  uniform: bool = True
  # The config field behind each key of settings().
  FIELDS: ClassVar[dict] = {'clip_rule': 'dp.clip_rule'}

  @classmethod
  def from_config(cls, dp) -> 'GlobalNorm':
    del dp
    return cls()

  def clip(self, units, mask, clip_norm) -> Clipped:
    norms = jnp.sqrt(sum(unit.squared_norms for unit in units))
    factor, dropped = clip_factors(norms, mask, clip_norm)
    return Clipped(factors=[factor] * len(units), norms=norms,
                   dropped=dropped, clipped=mask & (norms > clip_norm))

  def settings(self) -> dict:
    return {'clip_rule': self.name}

  def summary(self) -> dict:
    return {}  # The default: results.json of a global run stays as it was.

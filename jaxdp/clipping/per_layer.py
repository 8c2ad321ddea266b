"""Per-layer (group-wise) clipping: each layer's gradient has its own bound.

For layers k = 1..K with bounds C_k and Σ_k C_k² = C², example i's gradient
on layer k is scaled by

    c_ik = min(1, C_k / ‖g_ik‖₂),

so its whole clipped gradient has norm ≤ sqrt(Σ_k C_k²) = C: the clipped sum
has exactly the sensitivity of global clipping with bound C, and the run is
accounted as one (McMahan et al. 2018, "A General Approach to Adding
Differential Privacy to Iterative Training Procedures", per-layer clipping).
A layer is the parameters under one module path (a Dense layer's kernel and
bias together). `dp.per_layer_clip_split` sets the bounds:

    equal   C_k = C / sqrt(K)
    params  C_k = C · sqrt(n_k / n), n_k the layer's parameter count

Each C_k (for a traced C, its fraction C_k / C) is rounded down to float32
and one ulp further, so Σ_k C_k² ≤ C² holds for the numbers the step really
uses. An example with a non-finite gradient in
any layer is dropped whole. The rule gives layers different weights, so the
fast path forms the sum from activations (book-keeping), never with a
second weighted backward pass.
"""

import dataclasses
import math
from typing import ClassVar

import jax.numpy as jnp
import numpy as np

from jaxdp.clipping.per_example import Clipped
from jaxdp.errors import ConfigError

SPLITS = ('equal', 'params')


def _round_down_f32(values) -> np.ndarray:
  exact = np.asarray(values, np.float64)
  out = exact.astype(np.float32)
  return np.where(out > exact, np.nextafter(out, np.float32(0)), out)


@dataclasses.dataclass(frozen=True)
class PerLayer:
  """A bound C_k per layer, with Σ_k C_k² = C²."""

  split: str = 'equal'
  name: str = 'per_layer'
  uniform: bool = False
  # The config field behind each key of settings().
  FIELDS: ClassVar[dict] = {'clip_rule': 'dp.clip_rule',
                            'per_layer_clip_split': 'dp.per_layer_clip_split'}

  @classmethod
  def from_config(cls, dp) -> 'PerLayer':
    if dp.per_layer_clip_split not in SPLITS:
      raise ConfigError('dp.per_layer_clip_split',
                        f'unknown split {dp.per_layer_clip_split!r}',
                        f'use one of {", ".join(SPLITS)}')
    return cls(split=dp.per_layer_clip_split)

  def fractions(self, sizes: list) -> np.ndarray:
    """C_k / C for layers of `sizes` parameters (float64, Σ squares = 1)."""
    sizes = np.asarray(sizes, np.float64)
    if self.split == 'equal':
      return np.full(len(sizes), 1.0 / math.sqrt(len(sizes)))
    return np.sqrt(sizes / sizes.sum())

  def clip(self, units, mask, clip_norm) -> Clipped:
    layers = list(dict.fromkeys(unit.layer for unit in units))
    index = {layer: k for k, layer in enumerate(layers)}
    sizes = [sum(u.size for u in units if u.layer == layer)
             for layer in layers]
    layer_sq = jnp.stack([sum(u.squared_norms for u in units
                              if u.layer == layer) for layer in layers], 1)
    layer_norms = jnp.sqrt(layer_sq)  # [n, K]
    finite = jnp.all(jnp.isfinite(layer_norms), axis=1)
    keep = mask & finite
    fractions = self.fractions(sizes)
    if isinstance(clip_norm, (int, float)):
      if math.isinf(clip_norm):
        factors = jnp.ones_like(layer_norms)
        bounds = None
      else:
        # One ulp below the float32 value at or under C·f_k: strictly below
        # the exact bound, whatever float64 did to f_k.
        bounds = jnp.asarray(np.nextafter(
            _round_down_f32(clip_norm * fractions), np.float32(0)))
    else:  # Traced C_t: the product may round up by half an ulp.
      down = np.nextafter(_round_down_f32(fractions), np.float32(0))
      bounds = clip_norm * jnp.asarray(down)
    if bounds is not None:
      safe = jnp.where(finite[:, None], layer_norms, 0.0)
      factors = bounds / jnp.maximum(safe, bounds)
      clipped = mask & jnp.any(layer_norms > bounds, axis=1)
    else:
      clipped = jnp.zeros_like(mask)
    factors = jnp.where(keep[:, None], factors, 0.0)
    return Clipped(
        factors=[factors[:, index[u.layer]] for u in units],
        norms=jnp.sqrt(jnp.sum(layer_sq, axis=1)), dropped=mask & ~finite,
        clipped=clipped)

  def settings(self) -> dict:
    return {'clip_rule': self.name, 'per_layer_clip_split': self.split}

  def summary(self) -> dict:
    return {'clip_rule': self.name, 'per_layer_clip_split': self.split}

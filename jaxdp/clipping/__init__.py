"""Per-example clipping: the *sum* of clipped per-example gradients.

For a batch of examples x_1..x_n with mask m_i (False for padding), the
clipped sum is

    S = Σ_i m_i · finite_i · clip(g_i),   ‖clip(g_i)‖₂ ≤ C,

where g_i is the gradient of example i's loss with respect to the whole
parameter pytree and finite_i is 0 when g_i holds a NaN or ±inf (zeroing it
depends only on that example, so the bound still holds). Adding or removing
one example moves S by at most C (add/remove-one sensitivity); replacing one
moves it by at most 2C (replace-one). `ClippedSum` carries that bound.

Two choices make a clipped sum, kept apart:

* the **rule** (`dp.clip_rule`, `RULES`): what clip(g_i) is. `global`
  scales the whole g_i to norm ≤ C (Abadi et al. 2016); `per_layer` gives each
  layer its own bound C_k with Σ C_k² = C². A rule changes what is trained,
  never ε: every rule's contributions have norm ≤ C.
* the **method** (`perf.clipping`, `METHODS`): how the sum is computed.
  `vmap` materialises per-example gradients; `fast` and `ghost`
  (`jaxdp.clipping.fast`) get per-layer norms from activations and output
  gradients of known layers. All agree up to rounding, for every rule.

Either can run in microbatches with `lax.scan`: that trades speed for memory
and leaves S unchanged up to floating-point summation order.

A new rule is one module with a class implementing
`jaxdp.clipping.per_example.ClipRule` (and `from_config(dp)`) plus one line
in `RULES`.
"""

import dataclasses
from typing import Any, Callable, Optional

import dp_accounting

from jaxdp.clipping import fast
from jaxdp.clipping import global_norm
from jaxdp.clipping import per_layer
from jaxdp.clipping.per_example import BatchLoss
from jaxdp.clipping.per_example import ClippedChunk
from jaxdp.clipping.per_example import ClippingStats
from jaxdp.clipping.per_example import ClipRule
from jaxdp.clipping.per_example import clip_factors
from jaxdp.clipping.per_example import expand
from jaxdp.clipping.per_example import microbatched
from jaxdp.clipping.per_example import rows_where
from jaxdp.clipping.per_example import sensitivity
from jaxdp.clipping.per_example import squared_norms
from jaxdp.clipping.per_example import weighted_sum
from jaxdp.clipping.vmap import vmap_clipped_chunk
from jaxdp.errors import ConfigError

# dp.clip_rule -> the rule's class.
RULES = {
    'global': global_norm.GlobalNorm,
    'per_layer': per_layer.PerLayer,
}

# perf.clipping -> how the fast path forms the sum (None: vmap, no fast path).
METHODS = {'fast': 'bookkeeping', 'ghost': 'second_backward', 'vmap': None}


@dataclasses.dataclass(frozen=True)
class ClippedSum:
  """f(params, batch, mask) -> (S, ClippingStats), with S's L2 bound.

  `l2_bound` bounds each example's contribution to S (C; possibly traced,
  adaptive clipping's C_t); `sensitivity(relation)` is what one neighbour
  can move S by. The noise is calibrated to the latter, never to anything
  else.
  """

  fn: Callable
  l2_bound: Any

  def __call__(self, params, batch, mask):
    return self.fn(params, batch, mask)

  def sensitivity(self, relation: dp_accounting.NeighboringRelation):
    return sensitivity(self.l2_bound, relation)


def rule_from_config(dp) -> ClipRule:
  """The clip rule `dp.clip_rule` names, with its settings."""
  if dp.clip_rule not in RULES:
    raise ConfigError('dp.clip_rule', f'unknown rule {dp.clip_rule!r}',
                      f'use one of {", ".join(RULES)}')
  return RULES[dp.clip_rule].from_config(dp)


def check_method(method: str) -> None:
  if method not in METHODS:
    raise ConfigError('perf.clipping', f'unknown method {method!r}',
                      f'use one of {", ".join(METHODS)}')


def clipped_sum(batch_loss: BatchLoss, clip_norm, rule: ClipRule,
                method: str = 'vmap',
                microbatch_size: Optional[int] = None) -> ClippedSum:
  """The clipped sum of `batch_loss`'s per-example gradients.

  Args:
    batch_loss: `batch_loss(params, batch) -> [n]` per-example losses.
    clip_norm: C > 0 (possibly traced); `float('inf')` disables clipping.
    rule: the clip rule (`RULES`), e.g. `RULES['global']()`.
    method: `perf.clipping` (`METHODS`); performance only.
    microbatch_size: process the batch in chunks of this many examples
      (must divide the batch size); None processes it in one go. A
      performance knob only: the result does not depend on it.

  Returns:
    A ClippedSum; its function is pure and jit-able.
  """
  check_method(method)
  if METHODS[method] is None:
    chunk = vmap_clipped_chunk(batch_loss, clip_norm, rule)
  else:
    chunk = fast.fast_clipped_chunk(batch_loss, clip_norm, METHODS[method],
                                    rule)
  return ClippedSum(microbatched(chunk, microbatch_size), clip_norm)

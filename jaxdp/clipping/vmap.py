"""The reference clipped sum: per-example gradients materialised by vmap.

Exact for any model; memory and time grow with batch × parameters. Each
parameter leaf is one unit of the clip rule.
"""

import jax
import jax.numpy as jnp

from jaxdp.clipping.global_norm import GlobalNorm
from jaxdp.clipping.per_example import BatchLoss
from jaxdp.clipping.per_example import ClippedChunk
from jaxdp.clipping.per_example import ClippingStats
from jaxdp.clipping.per_example import ClipRule
from jaxdp.clipping.per_example import expand
from jaxdp.clipping.per_example import leaf_units
from jaxdp.clipping.per_example import weighted_sum


def vmap_clipped_chunk(batch_loss: BatchLoss, clip_norm,
                       rule: ClipRule = GlobalNorm()) -> ClippedChunk:
  """chunk(params, batch, mask) -> (Σ_i clipped g_i, ClippingStats)."""
  one = lambda params, example: batch_loss(params, expand(example))[0]
  per_example = jax.vmap(jax.value_and_grad(one), in_axes=(None, 0))

  def chunk(params, batch, mask):
    losses, grads = per_example(params, batch)
    out = rule.clip(leaf_units(grads), mask, clip_norm)
    stats = ClippingStats(norms=jnp.where(mask, out.norms, 0.0),
                          losses=jnp.where(mask, losses, 0.0),
                          dropped=out.dropped, clipped=out.clipped)
    return weighted_sum(grads, out.factors), stats

  return chunk

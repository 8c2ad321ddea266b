"""Divergence detection from signals that cost no privacy.

Two signals are used, both post-processing of the privatised updates or
functions of public data:

* the parameters are no longer all finite (they are the running sum of the
  privatised updates, so this is "a non-finite privatised update");
* the loss on the held-out evaluation split is not finite, or exceeds
  `spike_factor` times the best evaluation loss seen so far. The evaluation
  split is treated as public.

Raw per-example quantities (losses, gradient norms, the number of dropped
non-finite examples) are never used: they are statistics of the private batch.
"""

import math
from typing import Optional

import jax
import jax.numpy as jnp


@jax.jit
def _all_finite(params) -> jax.Array:
  leaves = jax.tree_util.tree_leaves(params)
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def params_finite(params) -> bool:
  return bool(_all_finite(params))


def reason(params_ok: bool, eval_loss: Optional[float],
           best_eval_loss: Optional[float], spike_factor: float
           ) -> Optional[str]:
  """Why the run is diverging, or None if it is not.

  Args:
    params_ok: whether every parameter is finite.
    eval_loss: held-out loss now (None if not evaluated at this step).
    best_eval_loss: lowest held-out loss since the start or the last
      rollback (None if none yet).
    spike_factor: a loss above spike_factor × best counts as divergence;
      0 turns the loss test off (non-finite values are always divergence).
  """
  if not params_ok:
    return 'the parameters are not all finite'
  if eval_loss is None:
    return None
  if not math.isfinite(eval_loss):
    return f'the held-out loss is {eval_loss}'
  if (spike_factor > 0 and best_eval_loss is not None
      and eval_loss > spike_factor * best_eval_loss):
    return (f'the held-out loss {eval_loss:.4g} is above {spike_factor:g} × '
            f'the best so far ({best_eval_loss:.4g})')
  return None

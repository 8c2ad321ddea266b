"""The check that a fast clipping path equals the vmap reference."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxdp import clipping
from jaxdp.clipping import fast as fast_clipping


def flat(tree):
  return np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(tree)])


def assert_fast_matches_vmap(loss, params, batch,
                             clipped_sum: str = 'bookkeeping'):
  """Norms and clipped sums agree, with a padded slot and one example clipped.

  Returns the sites the fast path found, for the caller's coverage checks.
  """
  n = jax.tree_util.tree_leaves(batch)[0].shape[0]
  mask = jnp.arange(n) < n - 1  # The last slot is padding.
  # The clip norm is an argument: one compiled reference serves both calls
  # (the first, with a C above every norm, only finds the norms).
  reference = jax.jit(lambda c, p, b, m: clipping.vmap_clipped_chunk(loss, c)(
      p, b, m))
  _, unclipped = reference(np.float32(np.finfo(np.float32).max), params,
                           batch, mask)
  clip = 0.99 * float(np.max(unclipped.norms))  # The largest gets clipped.
  fast = jax.jit(fast_clipping.fast_clipped_chunk(loss, clip, clipped_sum))
  ref_sum, ref_stats = reference(np.float32(clip), params, batch, mask)
  fast_sum, fast_stats = fast(params, batch, mask)
  np.testing.assert_allclose(fast_stats.norms, ref_stats.norms, rtol=2e-4,
                             atol=1e-6)
  assert float(jnp.max(ref_stats.norms)) > clip
  np.testing.assert_allclose(flat(fast_sum), flat(ref_sum), rtol=2e-4,
                             atol=2e-6)
  assert (jax.tree_util.tree_structure(fast_sum) ==
          jax.tree_util.tree_structure(params))
  return fast_clipping.find_sites(loss, params, batch)

"""Per-example clipping: bounds, sensitivity, masking, microbatching."""

import math

import dp_accounting
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import mlp_problem
from jaxdp import clipping
from jaxdp.clipping import fast as fast_clipping

# Every property must hold for every way of computing the clipped sum.
METHODS = {'vmap': clipping.vmap_clipped_chunk,
           'fast': fast_clipping.fast_clipped_chunk,
           'ghost': lambda loss, clip: fast_clipping.fast_clipped_chunk(
               loss, clip, 'second_backward')}
pytestmark = pytest.mark.parametrize('method', sorted(METHODS))


def _flat(tree):
  return jnp.concatenate([jnp.ravel(x) for x in jax.tree_util.tree_leaves(tree)])


def _make(method, loss_fn, clip_norm, microbatch=None):
  return jax.jit(clipping.microbatched(METHODS[method](loss_fn, clip_norm),
                                       microbatch))


def _sum_of(method, loss_fn, params, batch, mask, clip_norm, microbatch=None):
  return _make(method, loss_fn, clip_norm, microbatch)(params, batch, mask)


def test_infinite_clip_is_the_plain_gradient_sum(method):
  _, loss_fn, params, batch = mlp_problem()
  mask = jnp.ones(8, bool)
  total, _ = _sum_of(method, loss_fn, params, batch, mask, math.inf)
  expected = jax.grad(lambda p: jnp.sum(loss_fn(p, batch)))(params)
  np.testing.assert_allclose(_flat(total), _flat(expected), rtol=1e-5,
                             atol=1e-6)


def test_each_clipped_gradient_has_norm_at_most_c(method):
  _, loss_fn, params, batch = mlp_problem(batch_size=16)
  clip = 0.05
  fn = _make(method, loss_fn, clip)
  _, stats = fn(params, batch, jnp.ones(16, bool))
  assert float(jnp.min(stats.norms)) > clip  # The bound is actually exercised.
  for i in range(16):
    one, _ = fn(params, batch, jnp.arange(16) == i)
    assert float(jnp.linalg.norm(_flat(one))) <= clip * (1 + 1e-5)


def test_removing_one_example_moves_the_sum_by_at_most_c(method):
  _, loss_fn, params, batch = mlp_problem(batch_size=16)
  clip = 0.3
  fn = _make(method, loss_fn, clip)
  full, stats = fn(params, batch, jnp.ones(16, bool))
  assert float(jnp.max(stats.norms)) > clip
  for i in range(16):
    without_i, _ = fn(params, batch, jnp.arange(16) != i)
    moved = float(jnp.linalg.norm(_flat(full) - _flat(without_i)))
    assert moved <= clip * (1 + 1e-5)


def test_padding_contributes_exactly_zero_even_if_it_holds_nan(method):
  _, loss_fn, params, (x, y) = mlp_problem(batch_size=8)
  real, _ = _sum_of(method, loss_fn, params, (x[:5], y[:5]), jnp.ones(5, bool), 1.0)
  mask = jnp.arange(8) < 5
  fn = _make(method, loss_fn, 1.0)
  zero_padded, _ = fn(params, (x.at[5:].set(0.0), y), mask)
  padded, stats = fn(params, (x.at[5:].set(jnp.nan), y), mask)
  if method == 'ghost':
    # NaN padding sends the chunk down the book-keeping route (a second
    # backward pass would spread 0 · NaN): same sum, other rounding.
    np.testing.assert_allclose(_flat(padded), _flat(zero_padded), rtol=1e-6,
                               atol=1e-7)
  else:  # Same shapes: bit-identical whatever the padding holds.
    np.testing.assert_array_equal(_flat(padded), _flat(zero_padded))
  # Against the unpadded batch: equal up to float32 summation order.
  np.testing.assert_allclose(_flat(padded), _flat(real), rtol=1e-5, atol=1e-6)
  assert not bool(jnp.any(stats.dropped))  # Padding is not counted as dropped.
  assert bool(jnp.all(stats.norms[5:] == 0))


def test_nonfinite_example_is_zeroed_not_poisoning_the_step(method):
  _, loss_fn, params, (x, y) = mlp_problem(batch_size=8)
  x_bad = x.at[3].set(jnp.inf)
  keep = jnp.arange(8) != 3
  total, stats = _sum_of(method, loss_fn, params, (x_bad, y), jnp.ones(8, bool), 1.0)
  reference, _ = _sum_of(method, loss_fn, params, (x, y), keep, 1.0)
  assert bool(jnp.all(jnp.isfinite(_flat(total))))
  np.testing.assert_allclose(_flat(total), _flat(reference), rtol=1e-5,
                             atol=1e-7)
  assert stats.dropped.tolist() == (~keep).tolist()


@pytest.mark.parametrize('microbatch', [1, 2, 4, 8])
def test_microbatch_size_does_not_change_the_result(method, microbatch):
  _, loss_fn, params, batch = mlp_problem(batch_size=8)
  mask = jnp.arange(8) < 6
  whole, stats_whole = _sum_of(method, loss_fn, params, batch, mask, 0.5)
  chunked, stats_chunked = _sum_of(method, loss_fn, params, batch, mask, 0.5,
                                   microbatch)
  np.testing.assert_allclose(_flat(chunked), _flat(whole), rtol=1e-5,
                             atol=1e-7)
  np.testing.assert_allclose(stats_chunked.norms, stats_whole.norms,
                             rtol=1e-5)


def test_sensitivity_depends_on_the_neighbouring_relation(method):
  del method
  rel = dp_accounting.NeighboringRelation
  assert clipping.sensitivity(0.7, rel.ADD_OR_REMOVE_ONE) == 0.7
  assert clipping.sensitivity(0.7, rel.REPLACE_ONE) == 1.4


def test_matches_optax_per_example_clipping_reference(method):
  # optax's own DP aggregator clips per example the same way; compare sums.
  _, loss_fn, params, batch = mlp_problem(batch_size=8)
  one = lambda p, ex: loss_fn(p, clipping.expand(ex))[0]
  per_example = jax.vmap(jax.grad(one), (None, 0))(params, batch)
  grads_list = jax.tree_util.tree_leaves(per_example)
  clipped, _ = optax.per_example_global_norm_clip(grads_list, 0.2)
  ours, _ = _sum_of(method, loss_fn, params, batch, jnp.ones(8, bool), 0.2)
  np.testing.assert_allclose(
      jnp.concatenate([jnp.ravel(c) for c in clipped]),
      _flat(ours), rtol=1e-5, atol=1e-7)

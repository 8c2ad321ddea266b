"""Gaussian noise: its scale, its freshness, its reproducibility, added once."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from scipy import stats

from jaxdp import noise
from jaxdp.train import step as steps
from jaxdp.mechanism import build_mechanism
from jaxdp.train.state import TrainState

_SHAPES = {'w': (300, 200), 'b': (20_000,)}  # 80,000 coordinates.


def _zeros():
  return {k: jnp.zeros(s, jnp.float32) for k, s in _SHAPES.items()}


def _flat(tree):
  return np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(tree)])


def variance_p_value(samples: np.ndarray, std: float) -> float:
  """Two-sided p-value of H0: samples are i.i.d. N(0, std²) (chi-square)."""
  statistic = float(np.sum(np.square(samples.astype(np.float64)))) / std**2
  n = samples.size
  return 2 * min(stats.chi2.cdf(statistic, n), stats.chi2.sf(statistic, n))


def _noise_of_step(std, batch, key, steps_before=0):
  tx = noise.add_noise_and_normalize(std, batch, key)
  state = tx.init(_zeros())
  for _ in range(steps_before):
    _, state = tx.update(_zeros(), state)
  out, _ = tx.update(_zeros(), state)
  return _flat(out)


def test_noise_std_is_sigma_c_over_expected_batch():
  sigma_c, batch = 0.7, 4.0
  sample = _noise_of_step(sigma_c, batch, jax.random.key(0))
  true_std = sigma_c / batch
  assert variance_p_value(sample, true_std) > 1e-3
  assert variance_p_value(sample, true_std * 2 / 3) < 1e-9
  assert variance_p_value(sample, true_std * 3 / 2) < 1e-9
  assert abs(float(np.mean(sample))) < 5 * true_std / np.sqrt(sample.size)


def test_noise_differs_between_steps_and_repeats_with_the_seed():
  key = jax.random.key(7)
  first = _noise_of_step(1.0, 1.0, key, steps_before=0)
  second = _noise_of_step(1.0, 1.0, key, steps_before=1)
  again = _noise_of_step(1.0, 1.0, jax.random.key(7), steps_before=1)
  other_seed = _noise_of_step(1.0, 1.0, jax.random.key(8), steps_before=1)
  np.testing.assert_array_equal(second, again)
  # Independent draws: correlation near 0 (|r| < 5/sqrt(n) is a 5σ bound).
  bound = 5 / np.sqrt(first.size)
  assert abs(np.corrcoef(first, second)[0, 1]) < bound
  assert abs(np.corrcoef(second, other_seed)[0, 1]) < bound


def test_leaves_get_independent_noise():
  sample = noise.gaussian_like({'a': jnp.zeros(50_000), 'b': jnp.zeros(50_000)},
                               jax.random.key(3), 1.0)
  assert abs(np.corrcoef(sample['a'], sample['b'])[0, 1]) < 5 / np.sqrt(5e4)


def test_full_train_step_adds_noise_exactly_once(small_config):
  """Zero gradients in, plain SGD (lr 1): params move by noise/B, std σC/B.

  Only 4 of the 8 slots hold real examples, so dividing by the realised batch
  size instead of the expected one (8) would also be caught.
  """
  dp = small_config.dp
  dp.clip_norm, dp.noise_multiplier, dp.batch_size = 0.5, 2.0, 8
  dp.sampler, dp.accountant = 'fixed_size', 'rdp'
  mechanism = build_mechanism(dp, small_config.perf, num_examples=100,
                              num_steps=5, num_epochs=None, seed=0)

  def batch_loss(p, inputs):  # A loss that ignores the parameters.
    return jnp.zeros(inputs.shape[0]) + 0.0 * (jnp.sum(p['w']) +
                                                jnp.sum(p['b']))

  tx = optax.chain(mechanism.noise_transform(seed=0), optax.sgd(1.0))
  params = _zeros()
  state = TrainState(step=jnp.zeros([], jnp.int32), params=params,
                     opt_state=tx.init(params))
  train_step = steps.make_train_step(batch_loss, mechanism, tx)
  batch = {'inputs': jnp.ones((8, 2)), 'mask': jnp.arange(8) < 4}
  state, _ = train_step(state, batch)
  moved = _flat(state.params)
  expected_std = 2.0 * 0.5 / 8
  assert variance_p_value(moved, expected_std) > 1e-3
  assert variance_p_value(moved, expected_std * np.sqrt(2)) < 1e-9  # Twice.
  assert variance_p_value(moved, expected_std / np.sqrt(8)) < 1e-9  # Per-ex.
  assert variance_p_value(moved, 2.0 * 0.5 / 4) < 1e-9  # Realised size.

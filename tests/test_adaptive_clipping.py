"""Adaptive clipping: the split of σ, the quantile it tracks, the real run."""

import dp_accounting
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import base
from jaxdp.noise import adaptive as adaptive_clipping
from jaxdp.noise.adaptive import AdaptiveClipping
from jaxdp.errors import ConfigError
from jaxdp.mechanism import build_mechanism
from jaxdp.train import train_and_evaluate
from test_noise import variance_p_value

_QUIET = lambda line: None
_ADD_REMOVE = dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE
_REPLACE = dp_accounting.NeighboringRelation.REPLACE_ONE


@pytest.mark.parametrize('relation, ratio', [(_ADD_REMOVE, 1), (_REPLACE, 2)])
def test_sum_and_count_together_are_the_accounted_gaussian(relation, ratio):
  sigma, sigma_b = 1.1, 12.8
  sigma_grad = adaptive_clipping.gradient_noise_multiplier(sigma, sigma_b,
                                                           relation)
  assert sigma_grad > sigma  # The count is paid for with gradient noise.
  # Releasing (S/C, b) with noise (σ_Δ, σ_b) has normalised sensitivity
  # sqrt((Δ_S/C / σ_Δ)² + (1/σ_b)²); a fixed-C step's is Δ_S/C / σ.
  joint = np.hypot(ratio / sigma_grad, 1 / sigma_b)
  assert joint == pytest.approx(ratio / sigma, rel=1e-12)


def test_a_count_noise_too_small_for_sigma_is_refused():
  with pytest.raises(ConfigError, match='dp.adaptive_clip_count_noise'):
    adaptive_clipping.gradient_noise_multiplier(2.0, 1.9, _ADD_REMOVE)
  with pytest.raises(ConfigError, match='dp.adaptive_clip_count_noise'):
    adaptive_clipping.gradient_noise_multiplier(2.0, 0.99, _REPLACE)


def _link(quantile=0.5, count_noise=5.0, clip=1.0, batch=100.0):
  settings = AdaptiveClipping(quantile, 0.2, count_noise)
  return adaptive_clipping.add_noise_and_adapt(
      np.array([3.0], np.float32), batch, jax.random.key(0), clip, settings)


@pytest.mark.parametrize('quantile', [0.2, 0.5, 0.9])
def test_the_clip_norm_converges_to_the_target_quantile(quantile):
  # Gradient norms |N(0, 4)|: the q-quantile is 2·Φ⁻¹((1 + q) / 2).
  from scipy import stats
  truth = 2 * stats.norm.ppf((1 + quantile) / 2)
  tx = _link(quantile)
  zeros = {'w': jnp.zeros(3)}
  state = tx.init(zeros)
  rng = np.random.default_rng(0)
  update = jax.jit(tx.update)
  seen = []
  for _ in range(400):
    norms = np.abs(rng.normal(0, 2, 100))
    count = jnp.float32(np.sum(norms <= float(state.clip_norm)))
    _, state = update(zeros, state, unclipped_count=count)
    seen.append(float(state.clip_norm))
  settled = np.mean(seen[200:])
  assert settled == pytest.approx(truth, rel=0.1)


def test_the_gradient_noise_scales_with_the_current_clip_norm():
  tx = _link(clip=0.5, batch=1.0)
  zeros = {'w': jnp.zeros((60_000,), jnp.float32)}
  state = tx.init(zeros)
  out, state = tx.update(zeros, state, unclipped_count=jnp.float32(100))
  assert variance_p_value(np.asarray(out['w']), 3.0 * 0.5) > 1e-3
  c_1 = float(state.clip_norm)
  assert c_1 != 0.5  # Everything was unclipped: C moves down.
  assert c_1 < 0.5
  out, state = tx.update(zeros, state, unclipped_count=jnp.float32(100))
  assert variance_p_value(np.asarray(out['w']), 3.0 * c_1) > 1e-3
  assert variance_p_value(np.asarray(out['w']), 3.0 * 0.5) < 1e-6


def _config(small_config):
  small_config.dp.adaptive_clip_quantile = 0.5
  small_config.dp.clip_norm = 10.0  # Far above the median norm.
  return small_config


def test_adaptive_clipping_spends_what_fixed_clipping_spends(small_config):
  fixed = build_mechanism(small_config.dp, small_config.perf, 1437, 50, None,
                          0)
  adaptive = build_mechanism(_config(small_config).dp, small_config.perf,
                             1437, 50, None, 0)
  assert adaptive.noise_multiplier == fixed.noise_multiplier
  assert adaptive.epsilon() == fixed.epsilon()
  assert adaptive.step_event() == fixed.step_event()
  assert adaptive.link.adaptive.count_noise == pytest.approx(
      adaptive.expected_batch_size / 20)


def test_a_real_run_moves_the_clip_norm_toward_the_median(small_config,
                                                          tmp_path):
  config = _config(small_config)
  config.train.num_steps = 30
  logged = []
  results = train_and_evaluate(config, str(tmp_path), log=logged.append)
  assert results['status'] == 'completed'
  clip_norms = [e['clip_norm'] for e in results['history']
                if 'clip_norm' in e]
  assert clip_norms and clip_norms[-1] < 10.0 * 0.5  # Halved at least.

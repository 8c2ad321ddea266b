"""Audits of correlated noise (banded MF, BLT): the auditor's scores for it,
the mutations that break it, and audits that catch them."""

import itertools

import dp_accounting
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import linalg

from configs import audit as audit_config
from configs import base
from jaxdp import sampling
from jaxdp.audit import mutations
from jaxdp.audit import report
from jaxdp.audit import run
from jaxdp.audit import scores
from jaxdp.errors import ConfigError
from jaxdp.mechanism import build_mechanism


def _mechanism(link, bands=3, steps=12, num_examples=400):
  dp = base.get_config().dp
  dp.batch_size, dp.noise_multiplier, dp.target_epsilon = 20, 1.2, None
  dp.accountant, dp.noise_mechanism, dp.mf_bands = 'rdp', link, bands
  return build_mechanism(dp, base.get_config().perf, num_examples, steps,
                         None, 0)


def _matrix(column, n):
  return np.tril(linalg.toeplitz(np.r_[column, np.zeros(n)][:n]))


# --- Scores. -----------------------------------------------------------------

def test_likelihood_of_independent_noise_is_dp_sgds():
  rng = np.random.default_rng(0)
  x = rng.normal(0.3, 1.5, (40, 25))
  model = scores.NoiseModel(np.ones(1), 1.5, 0.1, 1)
  q, var = 0.1, 1.5 ** 2
  expected = np.logaddexp(np.log1p(-q),
                          np.log(q) + (2 * x - 1) / (2 * var)).sum(0)
  np.testing.assert_allclose(
      scores.likelihood(x, model, np.zeros(25, int)), expected, rtol=1e-12)


def test_likelihood_of_banded_noise_is_the_exact_ratio():
  """Against the ratio summed over every participation pattern of the
  canary's group: mixtures of N(C·p, s²) over N(0, s²) in y = C·x."""
  n, b, q, s = 7, 2, 0.3, 0.8
  column = np.array([1.0, 0.6])
  c = _matrix(column, n)
  model = scores.NoiseModel(column, s, q, b)
  rng = np.random.default_rng(1)
  x = rng.normal(0, 1, (n, 6))
  groups = np.array([0, 1, 0, 1, 1, 0])
  got = scores.likelihood(x, model, groups)
  for i, g in enumerate(groups):
    y = c @ x[:, i]
    steps = list(range(g, n, b))
    ratio = 0.0
    for pattern in itertools.product((0, 1), repeat=len(steps)):
      p = np.zeros(n)
      p[steps] = pattern
      chance = q ** sum(pattern) * (1 - q) ** (len(steps) - sum(pattern))
      mean = c @ p
      ratio += chance * np.exp((mean @ y - mean @ mean / 2) / s ** 2)
    assert got[i] == pytest.approx(np.log(ratio), rel=1e-9)


def test_measured_likelihood_agrees_with_the_stated_one_when_code_is_right():
  n, m, s = 8, 20000, 2.0
  column = np.array([1.0, 0.5, 0.3])
  rng = np.random.default_rng(2)
  groups = rng.integers(0, 3, m)
  x = np.linalg.solve(_matrix(column, n), rng.normal(0, s, (n, m)))
  x += ((np.arange(n)[:, None] % 3 == groups) &
        (rng.random((n, m)) < 0.4)).astype(float)
  model = scores.NoiseModel(column, s, 0.4, 3)
  stated = scores.likelihood(x, model, groups)
  measured = scores.measured_likelihood(x, model, groups)
  assert np.corrcoef(stated, measured)[0, 1] > 0.99
  assert scores.white_box_names(model) == ('likelihood',
                                           'measured_likelihood', 'spread')
  assert scores.white_box_names(scores.NoiseModel(np.ones(1), s, 0.4, 1)) == (
      'likelihood', 'spread')


@pytest.mark.parametrize('link', ['banded_mf', 'blt'])
def test_noise_model_is_what_the_mechanism_runs(link):
  mechanism = _mechanism(link)
  model = scores.noise_model(mechanism)
  strategy = mechanism.link.strategy()
  np.testing.assert_array_equal(model.column, strategy.column)
  assert model.std == pytest.approx(mechanism.noise_multiplier *
                                    strategy.sensitivity)
  assert model.rate == mechanism.sampler.group_sampling_probability
  assert model.period == 3


# --- Mutations. --------------------------------------------------------------

def _noise(mechanism, steps=12, size=3000):
  """[steps, size] w_t: the noise each step adds to the clipped sum."""
  tx = mechanism.noise_transform(7)
  zeros = {'w': jnp.zeros(size)}
  state = tx.init(zeros)
  out = []
  for _ in range(steps):
    mean, state = tx.update(zeros, state)
    out.append(np.asarray(mean['w'], np.float64) *
               mechanism.expected_batch_size)
  return np.stack(out)


@pytest.mark.parametrize('link', ['banded_mf', 'blt'])
def test_wrong_strategy_inverse_filters_the_draws_with_2i_minus_c(link):
  real = _mechanism(link)
  c = _matrix(real.link.strategy().column, 12)
  z = c @ _noise(real)  # The draws, recovered from the correct noise.
  broken = _noise(mutations.mutate(real, 'wrong_strategy_inverse'))
  np.testing.assert_allclose(broken, (2 * np.eye(12) - c) @ z, rtol=1e-3,
                             atol=1e-3 * z.std())


@pytest.mark.parametrize('link', ['banded_mf', 'blt'])
def test_reused_buffer_draw_repeats_every_draw_b_steps_later(link):
  real = _mechanism(link)
  c = _matrix(real.link.strategy().column, 12)
  z = c @ _noise(mutations.mutate(real, 'reused_buffer_draw'))
  np.testing.assert_allclose(z[3:], z[:-3], rtol=1e-3, atol=1e-3 * z.std())
  assert abs(np.corrcoef(z[0], z[1])[0, 1]) < 0.1
  fresh = c @ _noise(real)
  np.testing.assert_allclose(z[:3], fresh[:3], rtol=1e-3,
                             atol=1e-3 * z.std())


def test_sampler_ignores_cycle_samples_everyone_at_the_group_rate():
  real = _mechanism('banded_mf', bands=4, num_examples=2000)
  broken = mutations.mutate(real, 'sampler_ignores_cycle')
  # The accountant is told what the real mechanism tells it.
  assert broken.epsilon() == real.epsilon()
  assert broken.step_event() == real.step_event()
  groups = real.sampler.assignment()
  counts = np.zeros(2000)
  for t in range(40):
    batch = sampling.reseeded(broken.sampler, 3).sample(t)
    chosen = batch.indices[batch.mask]
    counts[chosen] += 1
    assert set(groups[chosen]) == {0, 1, 2, 3}  # Not only group t mod 4.
    assert len(batch.indices) >= len(chosen)
  q = real.sampler.group_sampling_probability
  assert counts.mean() / 40 == pytest.approx(q, rel=0.05)


def test_correlated_mutations_are_refused_for_independent_noise():
  gaussian = _mechanism('gaussian')
  for mutation in mutations.CORRELATED_MUTATIONS:
    with pytest.raises(ConfigError, match='--mutation'):
      mutations.mutate(gaussian, mutation)
  with pytest.raises(ConfigError, match='dp.mf_bands'):
    mutations.mutate(_mechanism('banded_mf', bands=1),
                     'wrong_strategy_inverse')


def test_an_understated_rate_sampler_can_be_reseeded():
  dp = audit_config.get_config().dp
  dp.accountant = 'rdp'
  real = build_mechanism(dp, base.get_config().perf, 2437, 50, None, 0)
  broken = mutations.mutate(real, 'wrong_sampling_rate')
  one, two = (sampling.reseeded(broken.sampler, s) for s in (1, 2))
  assert one.sample(0).indices.tolist() != two.sample(0).indices.tolist()
  assert one.sample(0).indices.tolist() == (
      sampling.reseeded(real.sampler, 1).sample(0).indices.tolist())
  gaussian = dp_accounting.GaussianDpEvent(1.0)
  assert one.step_event(gaussian).sampling_probability == pytest.approx(
      real.sampling_probability / mutations.UNDERSTATED_RATE_FACTOR)


# --- Audits. -----------------------------------------------------------------

def _fast_config(link):
  config = audit_config.get_config()
  config.model.hidden_sizes = (16,)
  config.train.num_steps = 40
  config.dp.noise_mechanism = link
  config.dp.mf_bands = 4
  return config


@pytest.mark.parametrize('link,mutation', [('banded_mf', 'none'),
                                           ('banded_mf', 'reused_buffer_draw'),
                                           ('blt', 'none'),
                                           ('blt', 'wrong_strategy_inverse')])
def test_one_run_audit_of_correlated_noise(link, mutation):
  """500 gradient canaries, 40 steps, claimed ε = 1."""
  audit = run.run_audit(_fast_config(link), run.AuditSettings(
      canaries=500, mutation=mutation), log=lambda _: None)
  line = report.summary(audit)
  assert line['epsilon_claimed'] == pytest.approx(1.0, abs=1e-3)
  assert line['max_certifiable'] > 2 * line['epsilon_claimed']
  assert line['leak_detected'] == (mutation != 'none')
  if mutation == 'none':
    assert line['epsilon_lower_bound'] < line['epsilon_claimed']


# The correlated-noise audits of docs/audits.md. BLT's sampler_ignores_cycle
# is left out: at this setting it is not caught (docs/audits.md says so).
@pytest.mark.slow
@pytest.mark.parametrize('link,mutation', [
    (link, mutation) for link in ('banded_mf', 'blt')
    for mutation in ('none',) + tuple(m for m in mutations.MUTATIONS
                                      if m not in ('none',
                                                   'wrong_sampling_rate'))
    if (link, mutation) != ('blt', 'sampler_ignores_cycle')])
def test_every_correlated_mutation_is_caught(link, mutation):
  config = audit_config.get_config()
  config.dp.noise_mechanism = link
  config.dp.mf_bands = 4
  audit = run.run_audit(config, run.AuditSettings(mutation=mutation),
                        log=lambda _: None)
  assert report.summary(audit)['leak_detected'] == (mutation != 'none')

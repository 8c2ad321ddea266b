"""Correlated noise (banded MF, BLT): strategies, streaming noise, cyclic
sampling, amplified accounting, and whole runs that resume and roll back."""

import dataclasses
import itertools
import math
import os
import shutil

import dp_accounting
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from scipy import linalg

import run_configs
from configs import base
from jaxdp import accounting
from jaxdp import noise
from jaxdp import sampling
from jaxdp.accounting import history
from jaxdp.errors import ConfigError
from jaxdp.mechanism import build_mechanism
from jaxdp.noise import strategies
from jaxdp.train import checkpointing
from jaxdp.train import ledger
from jaxdp.train import train_and_evaluate

_QUIET = lambda line: None


def _matrix(strategy) -> np.ndarray:
  return np.tril(linalg.toeplitz(strategy.column))


def _brute_force_sensitivity(c_matrix, separation, sign_vectors=True):
  """max ‖C·Δ‖ over every set of steps ≥ `separation` apart and every
  choice of ±1 contributions (unit vectors along one direction, and their
  signs: the extreme points for a Toeplitz C of either sign)."""
  n, best = c_matrix.shape[0], 0.0
  for size in range(1, n + 1):
    for steps in itertools.combinations(range(n), size):
      if any(b - a < separation for a, b in zip(steps, steps[1:])):
        continue
      signs = (itertools.product((1, -1), repeat=size - 1) if sign_vectors
               else [(1,) * (size - 1)])
      for sign in signs:
        best = max(best, float(np.linalg.norm(
            c_matrix[:, steps] @ np.array((1, *sign)))))
  return best


def _dp(link, bands=4, **fields):
  dp = base.get_config().dp
  dp.batch_size, dp.noise_multiplier, dp.target_epsilon = 20, 1.2, None
  dp.accountant, dp.noise_mechanism, dp.mf_bands = 'rdp', link, bands
  for key, value in fields.items():
    dp[key] = value
  return dp


def _mechanism(link, bands=4, steps=24, num_examples=400, **fields):
  return build_mechanism(_dp(link, bands, **fields), base.get_config().perf,
                         num_examples, steps, None, 0)


# --- Strategies. -----------------------------------------------------------

def test_one_band_is_the_identity_with_dp_sgd_error():
  for n in (1, 7, 100):
    identity = strategies.banded(n, 1)
    assert identity.is_identity and identity.buffers == 0
    assert identity.rmse == pytest.approx(strategies.identity_rmse(n))
    np.testing.assert_array_equal(identity.inverse_column, np.eye(n)[:, 0])


@pytest.mark.parametrize('kind,n,b', [('banded', 9, 3), ('banded', 12, 4),
                                      ('blt', 9, 2), ('blt', 10, 3),
                                      ('blt', 8, 1)])
def test_rmse_inverse_and_sensitivity_match_the_explicit_matrices(kind, n, b):
  strategy = strategies.strategy(kind, n, b, buffers=2)
  c = _matrix(strategy)
  np.testing.assert_allclose(np.linalg.inv(c)[:, 0], strategy.inverse_column,
                             atol=1e-12)
  prefix = np.tril(np.ones((n, n))) @ np.linalg.inv(c)
  assert strategy.rmse == pytest.approx(
      strategy.sensitivity * np.linalg.norm(prefix) / math.sqrt(n), rel=1e-9)
  assert strategy.max_column_norm == pytest.approx(
      np.linalg.norm(c, axis=0).max(), rel=1e-12)
  # Against every participation pattern and sign, by brute force.
  every_pattern = _brute_force_sensitivity(c, b)
  if kind == 'blt':  # The whole run's sensitivity is one release's.
    assert strategy.sensitivity == pytest.approx(every_pattern, rel=1e-9)
  else:  # Participations b apart are orthogonal: each its own release.
    gram = c.T @ c
    for i, j in itertools.combinations(range(n), 2):
      if j - i >= b:
        assert gram[i, j] == 0.0
    most = -(-n // b)
    assert every_pattern == pytest.approx(
        math.sqrt(most) * strategy.sensitivity, rel=1e-9)


def test_optimised_strategies_beat_independent_noise():
  n = 200
  previous = strategies.identity_rmse(n)
  for b in (2, 4, 16):
    banded = strategies.banded(n, b)
    assert banded.rmse < previous  # More bands, less error.
    previous = banded.rmse
  # BLT is compared with DP-SGD under the same unamplified accounting:
  # ⌈n/b⌉ participations of independent noise have sensitivity √⌈n/b⌉.
  for b in (4, 16):
    blt = strategies.blt(n, b, 3)
    assert blt.rmse < 0.7 * math.sqrt(-(-n // b)) * strategies.identity_rmse(n)
    assert all(w > 0 for w in blt.omega) and sum(blt.omega) < 1
    assert all(0 < t < 1 for t in blt.theta)


def test_the_blt_extension_bound_covers_every_further_participation():
  n, b, extra = 8, 2, 6
  strategy = strategies.blt(n, b, 2)
  bound = strategies.pattern_increment_bound(strategy)
  longer = np.tril(linalg.toeplitz(strategies.blt_column(
      strategy.omega, strategy.theta, n + extra)))
  base_sens = strategy.sensitivity
  for more in range(1, extra + 1):
    total = _brute_force_sensitivity(longer[:n + more, :n + more], b,
                                     sign_vectors=False)
    participations = -(-more // b)
    assert total ** 2 <= base_sens ** 2 + participations * bound + 1e-9


def test_strategies_are_cached_and_bad_sizes_name_the_field():
  assert strategies.banded(50, 3) is strategies.banded(50, 3)
  with pytest.raises(ConfigError, match='dp.mf_bands'):
    strategies.banded(50, 0)
  with pytest.raises(ConfigError, match='dp.mf_buffers'):
    strategies.blt(50, 2, 0)


# --- The streaming noise. ----------------------------------------------------

@pytest.mark.parametrize('link', ['banded_mf', 'blt'])
def test_streamed_noise_is_the_strategy_inverse_of_the_drawn_z(link):
  mechanism = _mechanism(link, bands=3, steps=10)
  strategy = mechanism.link.strategy()
  tx = mechanism.noise_transform(5)
  zeros = {'a': jnp.zeros((7,)), 'b': jnp.zeros((2, 3))}
  state = tx.init(zeros)
  out, z = [], []
  for _ in range(10):
    z.append(noise.gaussian_like(zeros, jax.random.fold_in(
        state.key, state.step), state.std))
    noisy, state = tx.update(zeros, state)
    out.append(noisy)
  w = np.stack([np.asarray(o['a']) for o in out]) * (
      mechanism.expected_batch_size)
  drawn = np.stack([np.asarray(t['a']) for t in z])
  expected = np.linalg.inv(_matrix(strategy)) @ drawn
  np.testing.assert_allclose(w, expected, rtol=1e-4, atol=1e-4 * float(
      state.std))
  assert float(state.std) >= mechanism.noise_std * strategy.sensitivity
  assert len(jax.tree_util.tree_leaves(
      state.recent if link == 'banded_mf' else state.buffers)) == (
          2 * strategy.buffers)  # O(buffers × parameters) of state.


@pytest.mark.parametrize('link', ['banded_mf', 'blt'])
def test_a_rollback_carries_the_buffers_to_the_executed_step(link):
  mechanism = _mechanism(link, bands=3, steps=10)
  tx = mechanism.noise_transform(1)
  zeros = {'w': jnp.zeros((5,))}
  state, saved, drawn = tx.init(zeros), None, []
  for i in range(7):
    if i == 2:
      saved = state  # The checkpoint a rollback returns to.
    out, state = tx.update(zeros, state)
    drawn.append(np.asarray(out['w']))
  carried = noise.with_noise_step(saved, 7)  # What a rollback does.
  assert int(carried.step) == 7
  # The same buffers, up to float32 rounding (the replay is compiled as one
  # loop, the steps were not).
  for a, b in zip(jax.tree_util.tree_leaves(carried._replace(key=None)),
                  jax.tree_util.tree_leaves(state._replace(key=None))):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5,
                               atol=1e-6 * float(state.std))
  after, _ = tx.update(zeros, carried)
  for earlier in drawn:
    assert not np.allclose(np.asarray(after['w']), earlier)
  with pytest.raises(ValueError, match='again'):
    noise.with_noise_step(state, 3)


def test_one_band_draws_what_dp_sgd_draws_bit_for_bit():
  banded, gaussian = (_mechanism(link, bands=1, steps=12)
                      for link in ('banded_mf', 'gaussian'))
  assert banded.noise_multiplier == gaussian.noise_multiplier
  for step in range(12):
    a, b = banded.sampler.sample(step), gaussian.sampler.sample(step)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.mask, b.mask)
  assert banded.epsilon() == gaussian.epsilon()
  params = {'w': jnp.linspace(-1, 1, 30).reshape(5, 6)}
  tx_a, tx_b = banded.noise_transform(3), gaussian.noise_transform(3)
  sa, sb = tx_a.init(params), tx_b.init(params)
  for _ in range(4):
    oa, sa = tx_a.update(params, sa)
    ob, sb = tx_b.update(params, sb)
    np.testing.assert_array_equal(np.asarray(oa['w']), np.asarray(ob['w']))


# --- Cyclic Poisson sampling. -----------------------------------------------

def test_cyclic_sampling_uses_group_t_mod_b_only():
  sampler = sampling.CyclicPoissonSampler(103, 10, 5, seed=3)
  groups = [set(sampler.group(g).tolist()) for g in range(5)]
  assert set().union(*groups) == set(range(103))
  assert sum(map(len, groups)) == 103
  sizes = []
  for step in range(200):
    batch = sampler.sample(step)
    chosen = set(batch.indices[batch.mask].tolist())
    assert chosen <= groups[step % 5]
    sizes.append(len(chosen))
  assert np.mean(sizes) == pytest.approx(10, rel=0.1)  # q' = 10·5/103.
  assert sampler.step_event(dp_accounting.GaussianDpEvent(1.0)) == (
      dp_accounting.PoissonSampledDpEvent(50 / 103,
                                          dp_accounting.GaussianDpEvent(1.0)))
  with pytest.raises(ConfigError, match='dp.mf_bands'):
    sampling.CyclicPoissonSampler(100, 30, 4, seed=0)  # q' = 1.2.


def test_adding_an_example_leaves_every_other_group_and_draw_unchanged():
  # The add/remove coupling: D and D ∪ {x} (x at index N) put the common
  # examples in the same groups and draw the same batches for them.
  small = sampling.CyclicPoissonSampler(300, 20, 6, seed=4)
  large = sampling.CyclicPoissonSampler(301, 20 * 301 / 300, 6, seed=4)
  large.group_sampling_probability = small.group_sampling_probability
  for g in range(6):
    np.testing.assert_array_equal(small.group(g),
                                  large.group(g)[large.group(g) < 300])
  for step in range(30):
    a, b = small.sample(step), large.sample(step)
    chosen = b.indices[b.mask]
    np.testing.assert_array_equal(a.indices[a.mask], chosen[chosen < 300])


def test_a_mismatched_participation_schema_is_refused():
  for bands, fields, field in [
      (4, {'sampler': 'fixed_size'}, 'dp.sampler'),
      (4, {'noise_schedule': 'linear'}, 'dp.noise_schedule'),
      (4, {'adaptive_clip_quantile': 0.5}, 'dp.adaptive_clip_quantile'),
      (40, {}, 'dp.mf_bands')]:  # q' = 20·40/400 > 1.
    with pytest.raises(ConfigError, match=field.replace('.', r'\.')):
      _mechanism('banded_mf', bands=bands, **fields)
  # A link handed a sampler that ignores the cycle refuses to run.
  right = _mechanism('banded_mf', bands=4)
  wrong = dataclasses.replace(right, sampler=sampling.PoissonSampler(
      400, 20, 0))
  with pytest.raises(ConfigError, match='dp.mf_bands'):
    wrong.link.check(wrong)
  other_bands = dataclasses.replace(right, sampler=_mechanism(
      'banded_mf', bands=2).sampler)
  with pytest.raises(ConfigError, match='dp.mf_bands'):
    other_bands.link.check(other_bands)


# --- Accounting. ---------------------------------------------------------------

@pytest.mark.parametrize('accountant', ['pld', 'rdp'])
def test_banded_epsilon_is_the_amplified_composition(accountant):
  n, b, num_examples, batch = 60, 4, 400, 20
  mechanism = _mechanism('banded_mf', bands=b, steps=n,
                         num_examples=num_examples, accountant=accountant)
  sigma = mechanism.noise_multiplier
  # Computed independently: ⌈k/b⌉ Poisson-sampled Gaussians at q' = bB/N.
  for k in (1, 4, 5, 37, 60, 75):
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(
            b * batch / num_examples, dp_accounting.GaussianDpEvent(sigma)),
        -(-k // b))
    direct = accounting.make_accountant(
        accountant, dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE)
    direct.compose(event)
    assert mechanism.epsilon(k) == pytest.approx(
        direct.get_epsilon(mechanism.delta), rel=1e-9)
  # The ledger's history gives the same ε after JSON, in any split.
  segments = [history.Segment.from_json(s) for s in mechanism.history(37)]
  assert history.epsilon(segments, accountant, mechanism.neighboring_relation,
                         mechanism.delta) == pytest.approx(
                             mechanism.epsilon(37), rel=1e-9)


def test_blt_charges_its_planned_run_up_front_and_bounds_the_rest():
  mechanism = _mechanism('blt', bands=4, steps=24)
  sigma = mechanism.noise_multiplier
  whole = accounting.epsilon('rdp', mechanism.neighboring_relation,
                             dp_accounting.GaussianDpEvent(sigma),
                             mechanism.delta)
  assert mechanism.epsilon(1) == pytest.approx(whole)
  assert mechanism.epsilon(24) == pytest.approx(whole)
  assert mechanism.epsilon(25) > mechanism.epsilon(24)
  assert mechanism.epsilon(28) == mechanism.epsilon(25)  # One cycle.


def test_sigma_is_calibrated_to_the_target_for_each_link():
  for link in ('banded_mf', 'blt'):
    mechanism = _mechanism(link, bands=4, steps=40, noise_multiplier=None,
                           target_epsilon=2.0, accountant='pld')
    assert mechanism.epsilon() <= 2.0
    assert mechanism.epsilon() > 1.95


# --- Whole runs. -----------------------------------------------------------------

def _run_config(link, steps=12, **overrides):
  fields = dict(dp__noise_mechanism=link, dp__mf_bands=4,
                checkpoint__every_steps=4)
  return run_configs.fixed_sigma_config(steps, **{**fields, **overrides})


def _params(workdir):
  checkpointer = checkpointing.Checkpointer(str(workdir), keep=None)
  path = os.path.join(checkpointer.directory, str(checkpointer.latest()),
                      'state')
  state = ocp.StandardCheckpointer().restore(path)
  return [np.asarray(x) for x in jax.tree_util.tree_leaves(state['params'])]


def test_a_one_band_run_is_a_dp_sgd_run_bit_for_bit(tmp_path):
  a = train_and_evaluate(_run_config('banded_mf', dp__mf_bands=1),
                         str(tmp_path / 'mf'), log=_QUIET)
  b = train_and_evaluate(_run_config('gaussian'), str(tmp_path / 'sgd'),
                         log=_QUIET)
  assert a['epsilon'] == b['epsilon'] and a['accuracy'] == b['accuracy']
  for x, y in zip(_params(tmp_path / 'mf'), _params(tmp_path / 'sgd')):
    np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize('link', ['banded_mf', 'blt'])
def test_a_correlated_run_resumes_bit_for_bit_and_its_ledger_verifies(
    tmp_path, link):
  whole = train_and_evaluate(_run_config(link), str(tmp_path / 'whole'),
                             log=_QUIET)
  # A crash after step 12 that lost the checkpoints of steps 8 and 12: the
  # run resumes from step 4's buffers and redraws the same noise.
  crashed = tmp_path / 'crashed'
  shutil.copytree(tmp_path / 'whole', crashed)
  for step in ('8', '12'):
    shutil.rmtree(crashed / checkpointing.DIRNAME / step)
  resumed = train_and_evaluate(_run_config(link), str(crashed), log=_QUIET)
  assert resumed['steps'] == 12 and resumed['executed_steps'] == 12
  assert resumed['epsilon'] == whole['epsilon']
  for x, y in zip(_params(crashed), _params(tmp_path / 'whole')):
    np.testing.assert_array_equal(x, y)
  assert ledger.verify_workdir(str(crashed))['epsilon'] == whole['epsilon']
  # Another horizon is another strategy: refused, naming the field.
  longer = _run_config(link, steps=16)
  with pytest.raises(ConfigError, match='train.num_steps'):
    train_and_evaluate(longer, str(crashed), log=_QUIET)


@pytest.mark.parametrize('link', ['banded_mf', 'blt'])
def test_a_rollback_keeps_the_undone_steps_and_the_budget(tmp_path, link):
  config = run_configs.fixed_sigma_config(
      20, eval__every_steps=5, optimizer__learning_rate=1e29,
      dp__noise_mechanism=link, dp__mf_bands=4)
  config.recovery.lr_factor = 1e-30
  config.dp.noise_multiplier = None
  config.dp.target_epsilon = 3.0
  results = train_and_evaluate(config, str(tmp_path), log=_QUIET)
  assert results['rollbacks'] >= 1
  assert results['executed_steps'] > results['steps']
  assert results['epsilon'] <= 3.0
  report = ledger.verify_workdir(str(tmp_path))
  assert report['epsilon'] == results['epsilon'] <= 3.0
  assert report['executions'] == results['executed_steps']

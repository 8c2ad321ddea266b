"""Private tuning: what it spends (against dp-accounting), how it searches."""

import json
import math
import subprocess
import sys

import dp_accounting
import numpy as np
import pytest
from scipy import stats
from dp_accounting import dp_event
from dp_accounting import rdp

from jaxdp.accounting import sampled_gaussian_rdp as sgm
from jaxdp.errors import ConfigError
from jaxdp.tuning import privacy
from jaxdp.tuning import search
from jaxdp.tuning.space import SearchSpace
from jaxdp.tuning.trial import TrialResult

_ONE_SHAPE = SearchSpace(batch_size=(128,), epochs=(10.0,))
_N, _DELTA, _SIGMA_V = 1150, 1e-5, 5.0


def _dp_accounting_total(plan, event_of_trials):
  (b, e), sigma = next(iter(plan.sigmas.items()))
  q = b / _N
  trial = dp_accounting.ComposedDpEvent([
      dp_accounting.SelfComposedDpEvent(dp_accounting.PoissonSampledDpEvent(
          q, dp_accounting.GaussianDpEvent(sigma)), plan.steps[(b, e)]),
      dp_accounting.GaussianDpEvent(_SIGMA_V)])
  accountant = rdp.RdpAccountant(orders=list(sgm.ORDERS))
  accountant.compose(event_of_trials(trial))
  return accountant.get_epsilon(_DELTA)


@pytest.mark.parametrize('shape', [1.0, 0.5, math.inf])
def test_random_search_total_is_dp_accountings_repeat_and_select(shape):
  plan = privacy.plan(_ONE_SHAPE, _N, 'repeat_and_select', 8, 3.0, _DELTA,
                      _SIGMA_V, shape)
  assert plan.epsilon_total <= 3.0
  assert plan.epsilon_total == pytest.approx(_dp_accounting_total(
      plan, lambda t: dp_event.RepeatAndSelectDpEvent(t, 8, shape)),
                                             rel=1e-9)


def test_grid_and_qiea_totals_are_dp_accountings_composition():
  plan = privacy.plan(_ONE_SHAPE, _N, 'composition', 8, 3.0, _DELTA,
                      _SIGMA_V)
  assert plan.epsilon_total <= 3.0
  assert plan.epsilon_total == pytest.approx(_dp_accounting_total(
      plan, lambda t: dp_accounting.SelfComposedDpEvent(t, 8)), rel=1e-9)
  # The per-trial share is used up: the total is within 0.1% of the target.
  assert plan.epsilon_total > 0.99 * 3.0


def test_every_candidate_meets_the_per_trial_budget_tightly():
  space = SearchSpace(batch_size=(64, 512), epochs=(5.0, 40.0))
  plan = privacy.plan(space, _N, 'composition', 4, 4.0, _DELTA, _SIGMA_V)
  spent = []
  for (b, e), sigma in plan.sigmas.items():
    q, steps = b / _N, plan.steps[(b, e)]
    eps = lambda s: sgm.epsilon(privacy.trial_rdp(q, steps, s, _SIGMA_V),
                                _DELTA)[0]
    assert eps(sigma) <= plan.epsilon_per_trial * (1 + 1e-9)
    spent.append(eps(sigma))
    # σ is the smallest (to 0.1%) that meets a given per-trial ε.
    target = 1.5
    calibrated = privacy.calibrate_sigmas([q], [steps], _SIGMA_V, target,
                                          _DELTA)[0]
    assert eps(calibrated) <= target < eps(calibrated / 1.002)
  # A trial is charged the envelope (max per order) of its candidates' RDP,
  # which converts to at least the worst candidate's ε, and here to little
  # more.
  assert plan.epsilon_per_trial >= max(spent)
  assert plan.epsilon_per_trial < 1.01 * max(spent)


def test_a_budget_too_small_for_the_scores_is_refused():
  with pytest.raises(ConfigError, match='target_epsilon'):
    privacy.plan(_ONE_SHAPE, _N, 'composition', 50, 0.05, _DELTA, 0.5)


@pytest.mark.parametrize('shape', [0.0, 0.5, 1.0, 3.0, math.inf])
def test_the_number_of_random_trials_has_the_accounted_distribution(shape):
  rng = np.random.default_rng(0)
  draws = np.array([search.draw_trial_count(rng, 6.0, shape)
                    for _ in range(20_000)])
  standard_error = draws.std() / np.sqrt(len(draws))
  assert abs(draws.mean() - 6.0) < 5 * standard_error
  if math.isinf(shape):
    assert (draws == 0).any()  # Poisson: K = 0 is possible.
    return
  assert draws.min() >= 1  # Truncated: never zero.
  # Geometric (η = 1) has P(K = k) = γ (1 − γ)^(k−1), γ = 1/mean; the others
  # follow Papernot & Steinke's definition, checked by a χ² test.
  pmf = search.trial_count_pmf(6.0, shape, 200)
  if shape == 1.0:
    k = np.arange(1, 200)
    np.testing.assert_allclose(pmf[1:], (1 / 6) * (5 / 6) ** (k - 1),
                               rtol=1e-9, atol=1e-15)
  counts = np.bincount(draws, minlength=200)[:200]
  expected = pmf * len(draws)
  cells = expected >= 5
  observed = np.append(counts[cells], counts[~cells].sum())
  wanted = np.append(expected[cells], expected[~cells].sum())
  assert stats.chisquare(observed, wanted).pvalue > 1e-4


def test_a_single_trial_search_draws_one_trial():
  rng = np.random.default_rng(0)
  assert {search.draw_trial_count(rng, 1.0, shape)
          for shape in (0.5, 1.0, 2.0)} == {1}


def test_grid_and_bit_codes_stay_inside_the_space():
  space = SearchSpace()
  for trials in (1, 3, 8, 16, 100):
    points = space.grid(trials)
    assert 1 <= len(points) <= trials and len(set(points)) == len(points)
  rng = np.random.default_rng(1)
  for _ in range(200):
    indices = space.decode(rng.integers(0, 2, space.num_bits))
    assert all(0 <= i < n for i, n in zip(indices, space.sizes()))


def _fake_trial(indices, index):
  # A made-up score that peaks at the largest learning rate and clip norm;
  # the search sees nothing but this number.
  score = (indices[0] + indices[1]) / 7 + 0.01 * (index % 7)
  return TrialResult(candidate=SearchSpace().candidate(indices),
                     noise_multiplier=1.0, steps=1, score=score,
                     test_accuracy=score)


@pytest.mark.parametrize('strategy', search.STRATEGIES)
def test_each_strategy_releases_its_best_scored_trial(strategy):
  result = search.search(_fake_trial, SearchSpace(), strategy, 8, seed=3)
  assert result.best is max(result.trials, key=lambda r: r.score)
  if strategy != 'random':
    assert len(result.trials) == 8
  seeds = search.trial_seeds(3, 1000)
  assert len(set(seeds)) == 1000  # Fresh noise for every trial.


def test_the_command_reports_the_total_privacy_of_the_search(tmp_path):
  out = subprocess.run(
      [sys.executable, '-m', 'experiments.tune', '--config=configs/tune.py',
       f'--workdir={tmp_path}', '--strategy=random', '--trials=2',
       '--shape=1', '--batch_size=256', '--epochs=2', '--seed=0',
       '--learning_rate=0.3,1'],
      capture_output=True, text=True, timeout=300, check=True)
  line = json.loads(out.stdout.strip().splitlines()[-1])
  for key in ('best_accuracy', 'epsilon_total', 'epsilon_per_trial',
              'trials', 'strategy'):
    assert key in line
  assert line['strategy'] == 'random'
  assert line['epsilon_total'] <= 4.0  # configs/tune.py's budget.
  assert line['epsilon_per_trial'] < line['epsilon_total']
  # Random search releases the best trial alone: no trial lines, and the
  # trial count reported is the mean the accountant assumed, not K.
  assert 'trial 1:' not in out.stdout
  assert line['trials'] == 2
  assert 0.0 <= line['best_accuracy'] <= 1.0
  saved = json.loads((tmp_path / 'tune.json').read_text())
  assert saved['epsilon_total'] == line['epsilon_total']


class _FakeTuner:
  """Searches without training: the accuracy is a function of the seed."""

  def search_with_trials(self, settings, seed):
    accuracy = {'random': 0.80, 'grid': 0.85, 'qiea': 0.83}[settings.strategy]
    return ({'best_accuracy': accuracy + 0.01 * seed, 'trials': 8,
             'epsilon_total': 3.99, 'epsilon_per_trial': 1.3,
             'accounting': search.accounting_of(settings.strategy)},
            search.SearchResult(settings.strategy, [None] * 8, None))


def test_the_comparison_pairs_each_strategy_with_random_by_seed():
  from jaxdp.studies import tuning_comparison as comparison
  from jaxdp.tuning.run import TuneSettings
  rows = comparison.compare(_FakeTuner(), [TuneSettings(strategy=s) for s in
                                           search.STRATEGIES], range(4))
  by = {r['strategy']: r for r in rows}
  assert by['random']['accuracy_mean'] == pytest.approx(0.815)
  # The seed effect cancels in the paired difference: no spread at all.
  assert by['grid']['minus_random_mean'] == pytest.approx(0.05)
  assert by['grid']['minus_random_ci95'] == pytest.approx(0.0, abs=1e-12)
  assert by['grid']['accuracy_ci95'] > 0
  assert '| qiea |' in comparison.table(rows)


def test_settings_a_trial_would_not_apply_are_refused():
  from configs import tune
  from jaxdp.tuning import trial
  for field, value in (('dp.sampler', 'fixed_size'),
                       ('dp.noise_schedule', 'cosine'),
                       ('dp.adaptive_clip_quantile', 0.5),
                       ('dp.pca_components', 10), ('data.augmult', 2),
                       ('optimizer.name', 'lamb'),
                       ('optimizer.schedule', 'cosine'),
                       ('optimizer.ema_decay', 0.99)):
    config = tune.get_config()
    group, name = field.split('.')
    config[group][name] = value
    with pytest.raises(ConfigError, match=field.replace('.', r'\.')):
      trial.check_config(config)


def _recording_tuner(secure: bool):
  from configs import tune
  from jaxdp.tuning.run import Tuner
  config = tune.get_config()
  config.dp.secure_noise = secure
  tuner = Tuner(config, 10.0)
  calls = []

  def record(candidate, sigma, steps, init_seed, privacy_seed):
    calls.append((init_seed, privacy_seed))
    return TrialResult(candidate=candidate, noise_multiplier=sigma,
                       steps=steps, score=len(calls) / 100,
                       test_accuracy=0.5)

  tuner.runner.run = record
  return tuner, calls


@pytest.mark.parametrize('secure', [False, True])
def test_random_search_hides_which_trial_it_released(secure):
  from jaxdp.tuning.run import TuneSettings
  tuner, calls = _recording_tuner(secure)
  results = tuner.search(TuneSettings(strategy='random', trials=8), seed=5)
  assert 'seed' not in results  # It would reproduce K and every draw.
  assert results['trials'] == 8  # E[K], not K.
  inits = {init for init, _ in calls}
  assert len(inits) == 1  # One initialisation: no trial index to read.
  privacy = [p for _, p in calls]
  assert len(set(privacy)) == len(privacy)
  if secure:  # Every trial's noise keeps the secret seed's 128 bits.
    assert all(p >= 2**127 for p in privacy)
    again, calls_again = _recording_tuner(True)
    again.search(TuneSettings(strategy='random', trials=8), seed=5)
    assert not set(privacy) & {p for _, p in calls_again}

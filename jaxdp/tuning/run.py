"""`tune`: a private search whose reported ε includes the search.

`config.dp.target_epsilon` and `config.dp.delta` are the budget of the whole
search; each candidate's σ is calibrated from its share (`tuning.privacy`).
The released model is the best-scoring trial's; its test accuracy is
measured on the test split, which no strategy sees.
"""

import dataclasses
import math
from typing import Callable

from jaxdp import streams
from jaxdp import data
from jaxdp.errors import ConfigError
from jaxdp.tuning.qiea import evolution as qiea
from jaxdp.tuning import privacy
from jaxdp.tuning import search as search_lib
from jaxdp.tuning.space import NAMES as SPACE_NAMES
from jaxdp.tuning.space import SearchSpace
from jaxdp.tuning.trial import TrialRunner


@dataclasses.dataclass(frozen=True)
class TuneSettings:
  """How to search (the flags of `experiments/tune.py`)."""

  strategy: str = 'random'
  trials: int = 8  # T, or E[K] for random.
  shape: float = 1.0  # η of K's distribution (random); inf = Poisson.
  # σ_s, in examples, on each trial's count of correct training
  # predictions (0.7% of accuracy on the 1,437 training digits).
  score_noise: float = 10.0
  population: int = 2  # QIEA individuals.
  # QIEA rotation step in units of π. Han & Kim's 0.01 needs ~25
  # generations to commit a bit; a search of a few generations needs more.
  qiea_delta_theta: float = 0.05


def check(settings: TuneSettings) -> None:
  """Raises ConfigError naming the flag of a bad setting."""
  if settings.strategy not in search_lib.STRATEGIES:
    raise ConfigError('--strategy', f'unknown {settings.strategy!r}',
                      f'use one of {", ".join(search_lib.STRATEGIES)}')
  if not settings.trials >= 1:
    raise ConfigError('--trials', f'must be >= 1, got {settings.trials}',
                      'run at least one trial')
  if not settings.shape >= 0:
    raise ConfigError('--shape', f'must be >= 0 (or inf), got '
                      f'{settings.shape}', 'use 1 (geometric) or inf')
  if not settings.score_noise > 0:
    raise ConfigError('--score_noise', 'must be > 0 (the score is '
                      f'released), got {settings.score_noise}',
                      'use e.g. 10 (examples)')
  if settings.strategy == 'qiea' and not (
      1 <= settings.population <= settings.trials):
    raise ConfigError('--population', f'must be in [1, --trials], got '
                      f'{settings.population}', 'use e.g. 2')


def planned_trials(settings: TuneSettings, space: SearchSpace) -> float:
  """Trials the accountant is told about (E[K] for random)."""
  if settings.strategy == 'grid':
    return len(space.grid(settings.trials))
  if settings.strategy == 'qiea':
    return settings.population * (settings.trials // settings.population)
  return float(settings.trials)


class Tuner:
  """One dataset, one compiled step, any number of searches."""

  def __init__(self, config, score_noise: float,
               space: SearchSpace = SearchSpace()):
    if config.dp.target_epsilon is None or math.isinf(
        config.dp.target_epsilon):
      raise ConfigError('dp.target_epsilon', 'tuning needs a total budget',
                        'set dp.target_epsilon (the whole search\'s ε)')
    self.config, self.space = config, space
    self.runner = TrialRunner(config, data.load_dataset(config.data),
                              score_noise)
    self.score_noise = score_noise
    self._plans = {}

  def plan(self, settings: TuneSettings) -> privacy.Plan:
    key = (settings.strategy, planned_trials(settings, self.space),
           settings.shape)
    if key not in self._plans:
      self._plans[key] = privacy.plan(
          self.space, self.runner.num_train,
          search_lib.accounting_of(settings.strategy), key[1],
          self.config.dp.target_epsilon, self.config.dp.delta,
          self.score_noise, settings.shape)
    return self._plans[key]

  def search(self, settings: TuneSettings, seed: int,
             log: Callable[[str], None] = lambda line: None) -> dict:
    """Runs one search; the results to release, with the total ε."""
    return self.search_with_trials(settings, seed, log)[0]

  def search_with_trials(self, settings: TuneSettings, seed: int,
                         log: Callable[[str], None] = lambda line: None
                         ) -> tuple:
    """(results, SearchResult): the release and every trial behind it.

    The SearchResult (all trials, and so K) is for benchmarks, which
    evaluate the method; for random search it is not part of the release.

    `seed` seeds the search (its draws, K, every trial's noise and
    sampler) unless `dp.secure_noise`: then those come from the operating
    system's entropy, and `seed` only initialises the models. As for a
    training run, a seed that decides the noise must be kept as secret as
    the data.
    """
    check(settings)
    plan = self.plan(settings)
    secure = bool(self.config.dp.secure_noise)
    search_seed = streams.secure_seed() if secure else seed
    random = settings.strategy == 'random'

    def run_trial(indices, index):
      candidate = self.space.candidate(indices)
      key = (candidate['batch_size'], candidate['epochs'])
      # Random search: every trial starts from the same initialisation, so
      # the released model does not tell which trial (and so how large a
      # K) it came from. The others release every trial anyway.
      init_seed = search_lib.trial_seeds(seed, 1 if random else index + 1)
      privacy_seed = search_lib.trial_seeds(search_seed, index + 1)
      return self.runner.run(candidate, plan.sigmas[key], plan.steps[key],
                             init_seed[-1], privacy_seed[-1])

    result = search_lib.search(
        run_trial, self.space, settings.strategy, settings.trials,
        search_seed, shape=settings.shape, population=settings.population,
        qiea_config=qiea.QieaConfig(
            delta_theta=settings.qiea_delta_theta * math.pi), log=log)
    best = result.best
    out = {
        'strategy': settings.strategy,
        'best_accuracy': None if best is None else best.test_accuracy,
        'best_score': None if best is None else best.score,
        'best_config': None if best is None else dict(
            best.candidate, noise_multiplier=best.noise_multiplier,
            steps=best.steps),
        'epsilon_total': plan.epsilon_total,
        'epsilon_per_trial': plan.epsilon_per_trial,
        'delta': plan.delta,
        # What the accountant was told: E[K] for random search (K itself
        # is not released), the trials run otherwise.
        'trials': plan.trials,
        'accounting': plan.accounting,
        # No seed: without secure_noise it decides every draw of the search
        # (K, candidates, noise), so it is kept as secret as the data.
        'secure_noise': secure,
        'privacy_plan': plan.to_json(),
    }
    return out, result


def describe(results: dict) -> str:
  """Two lines for people: what was released, and what it all cost."""
  best = results['best_config']
  released = ('no trial ran (K = 0): nothing is released' if best is None
              else f'released: {best} with test accuracy '
              f'{results["best_accuracy"]:.4f}')
  return (f'{released}\nprivacy of the whole search: ε = '
          f'{results["epsilon_total"]:.4f} at δ = {results["delta"]:g} '
          f'({_trials_text(results)}, {results["accounting"]}; one trial '
          f'spends ε = {results["epsilon_per_trial"]:.4f})')


def _trials_text(results: dict) -> str:
  if results['strategy'] == 'random':
    return f'a hidden number of trials, {results["trials"]:g} on average'
  return f'{results["trials"]:g} trials'

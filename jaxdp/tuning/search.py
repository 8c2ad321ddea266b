"""The search strategies: which candidates to train, and the one released.

* `random`: K i.i.d. uniform candidates, K drawn from the distribution the
  repeat-and-select bound assumes (truncated negative binomial with shape η,
  η = 1 geometric; η = inf Poisson, where K = 0 releases nothing). The best
  score's model is released, and nothing else.
* `grid`: the coarse grid of `SearchSpace.grid` (T points).
* `qiea`: a quantum-inspired evolutionary search (Han & Kim 2002) over the
  candidates' bit codes, P individuals for T / P generations; each
  generation's Q-bits rotate toward the best scores seen, so later trials
  depend on earlier scores and the trials compose.

Only noisy validation scores steer any strategy. Random search prints no
score but the released one's: the repeat-and-select bound covers the best
trial's output alone (K itself is drawn independently of the data).
"""

import dataclasses
import math
from typing import Callable, Optional

import jax
import numpy as np
from dp_accounting.rdp import rdp_privacy_accountant

from jaxdp.quantum import qiea
from jaxdp.tuning.space import SearchSpace
from jaxdp.tuning.trial import TrialResult

STRATEGIES = ('random', 'grid', 'qiea')
# Streams of the search's own randomness (trial count, candidates, QIEA).
_SEARCH_STREAM = 0x5EA
# Each trial's privacy seed, from the run seed and the trial's index.
_TRIAL_STREAM = 0x7E1A


def accounting_of(strategy: str) -> str:
  return 'repeat_and_select' if strategy == 'random' else 'composition'


def trial_seed(seed: int, index: int) -> int:
  """A distinct privacy seed (noise, sampler, initialisation) per trial."""
  return int(np.random.SeedSequence([seed, _TRIAL_STREAM, index])
             .generate_state(1)[0] & 0x7FFFFFFF)


def draw_trial_count(rng: np.random.Generator, mean: float,
                     shape: float) -> int:
  """K for random search: truncated negative binomial(η, γ) with the given
  mean (γ from dp-accounting's inversion), or Poisson(mean) for η = inf.

  The truncated negative binomial is NB(η, γ) (failures before the η-th
  success, success probability γ) conditioned on K ≥ 1 (Papernot & Steinke
  2022, Definition 1); drawn by rejection of zeros.
  """
  if math.isinf(shape):
    return int(rng.poisson(mean))
  gamma = rdp_privacy_accountant._gamma_truncated_negative_binomial(  # pylint: disable=protected-access
      shape, mean)
  if shape == 0:  # Logarithmic: P(K = k) ∝ (1 − γ)^k / k.
    return int(rng.logseries(1 - gamma))
  while True:
    k = int(rng.negative_binomial(shape, gamma))
    if k >= 1:
      return k


@dataclasses.dataclass
class SearchResult:
  strategy: str
  trials: list  # TrialResult of every trial run, in order.
  best: Optional[TrialResult]  # The released one (None: K = 0).


def search(run_trial: Callable[[dict, int], TrialResult], space: SearchSpace,
           strategy: str, trials: float, seed: int, shape: float = 1.0,
           population: int = 2,
           qiea_config: qiea.QieaConfig = qiea.QieaConfig(),
           log: Callable[[str], None] = lambda line: None) -> SearchResult:
  """Runs one search; `run_trial(candidate indices, trial seed)` trains.

  Args:
    run_trial: trains one candidate (given as indices into `space`) with a
      privacy seed, returns its TrialResult (its `score` is noisy).
    space: the candidates.
    strategy: random | grid | qiea.
    trials: T (grid: at most T; qiea: P × floor(T / P)); random: E[K].
    seed: seeds the search's own draws and every trial's privacy seed.
    shape: η of K's distribution (random only).
    population: P, the QIEA population.
    qiea_config: the QIEA constants.
    log: receives a line per trial.
  """
  rng = np.random.default_rng([seed, _SEARCH_STREAM])
  done = []

  def run(indices) -> float:
    result = run_trial(indices, trial_seed(seed, len(done)))
    done.append(result)
    # Repeat-and-select covers releasing the best trial only: the other
    # trials' scores stay hidden. Composition covers every score.
    score = ('withheld (random search releases only the best)'
             if strategy == 'random' else f'{result.score:.4f}')
    log(f'trial {len(done)}: {result.candidate} σ={result.noise_multiplier:.3g}'
        f' score {score} (noisy validation accuracy)')
    return result.score

  if strategy == 'random':
    for _ in range(draw_trial_count(rng, trials, shape)):
      run(space.random_indices(rng))
  elif strategy == 'grid':
    for indices in space.grid(int(trials)):
      run(indices)
  elif strategy == 'qiea':
    generations = max(1, int(trials) // population)
    state = qiea.init(population, space.num_bits)
    key = jax.random.key(int(rng.integers(2**31)))
    for g in range(generations):
      bits = np.asarray(qiea.observe(jax.random.fold_in(key, g), state))
      fitness = np.array([run(space.decode(b)) for b in bits], np.float32)
      state = qiea.update(state, bits, fitness, qiea_config)
  else:
    raise ValueError(f'unknown strategy {strategy!r}')
  best = max(done, key=lambda r: r.score) if done else None
  return SearchResult(strategy=strategy, trials=done, best=best)

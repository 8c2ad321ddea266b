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

Only noisy scores steer any strategy. Random search shows nothing but the
released trial: the repeat-and-select bound covers the best trial's output
alone, with the number of trials K hidden (given K = k, the best of k
trials can cost up to k trials' privacy). The wall time of a search still
grows with K: a timing side channel this code does not close.
"""

import dataclasses
import math
from typing import Callable, Optional

from dp_accounting.rdp import rdp_privacy_accountant
import jax
import numpy as np
from scipy import special

from jaxdp import streams
from jaxdp.mechanism import MAX_CONFIG_SEED
from jaxdp.tuning.qiea import evolution as qiea
from jaxdp.tuning.space import SearchSpace
from jaxdp.tuning.trial import TrialResult

STRATEGIES = ('random', 'grid', 'qiea')
# Streams of the search's own randomness (trial count, candidates, QIEA).
# Each trial's privacy seed, from the run seed and the trial's index.


def accounting_of(strategy: str) -> str:
  return 'repeat_and_select' if strategy == 'random' else 'composition'


def trial_seeds(seed: int, count: int) -> list:
  """Distinct seeds, one per trial, from the search's seed.

  31-bit seeds from a config seed; from a secure (128-bit) seed, 128-bit
  seeds with the top bit set, so that each trial's noise keeps the secret
  seed's entropy (`mechanism.noise_key` reads all of it).
  """
  wide = seed > MAX_CONFIG_SEED
  out, seen, i = [], set(), 0
  while len(out) < count:
    words = np.random.SeedSequence([seed, streams.TRIAL_STREAM, i]).generate_state(
        4 if wide else 1, np.uint32)
    i += 1
    value = (int.from_bytes(words.tobytes(), 'little') | (1 << 127) if wide
             else int(words[0] & 0x7FFFFFFF))
    if value not in seen:  # A repeat would reuse a trial's noise.
      seen.add(value)
      out.append(value)
  return out


def trial_count_pmf(mean: float, shape: float, size: int) -> np.ndarray:
  """P(K = k) for k = 0 .. size − 1 of the truncated negative binomial
  (Papernot & Steinke 2022, Definition 1) with this mean and shape η > 0:
  P(K = k) ∝ (1 − γ)^k · Γ(k + η) / (Γ(η) k!) for k ≥ 1, 0 for k = 0, γ
  from dp-accounting's inversion of the mean (its accountant's parameter);
  for η = 0 the logarithmic distribution, P(K = k) ∝ (1 − γ)^k / k."""
  gamma = rdp_privacy_accountant._gamma_truncated_negative_binomial(  # pylint: disable=protected-access
      shape, mean)
  k = np.arange(1, size)
  if shape == 0:
    log_p = k * np.log1p(-gamma) - np.log(k)
  else:
    log_p = (k * np.log1p(-gamma) + special.gammaln(k + shape)
             - special.gammaln(shape) - special.gammaln(k + 1))
  p = np.exp(log_p - log_p.max())
  return np.concatenate([[0.0], p / p.sum()])


def draw_trial_count(rng: np.random.Generator, mean: float,
                     shape: float) -> int:
  """K for random search, from the distribution the accountant assumes:
  Poisson(mean) for η = inf (K = 0 possible), otherwise the truncated
  negative binomial (or logarithmic, η = 0) of `trial_count_pmf`, drawn by
  inverting its CDF (its tail beyond the table is below 1e-12)."""
  if math.isinf(shape):
    return int(rng.poisson(mean))
  if mean <= 1.0:
    return 1  # K ≥ 1 with mean 1: always one trial.
  size = 64
  while True:  # Grow the table until its last entry is negligible.
    pmf = trial_count_pmf(mean, shape, size)
    if pmf[-1] < 1e-15 and pmf[-size // 2:].sum() < 1e-12:
      break
    size *= 2
  cdf = np.cumsum(pmf)
  return min(int(np.searchsorted(cdf, rng.random() * cdf[-1], side='right')),
             size - 1)


@dataclasses.dataclass
class SearchResult:
  strategy: str
  trials: list  # TrialResult of every trial run, in order.
  best: Optional[TrialResult]  # The released one (None: K = 0).


def search(run_trial: Callable[[tuple, int], TrialResult], space: SearchSpace,
           strategy: str, trials: float, seed: int, shape: float = 1.0,
           population: int = 2,
           qiea_config: qiea.QieaConfig = qiea.QieaConfig(),
           log: Callable[[str], None] = lambda line: None) -> SearchResult:
  """Runs one search; `run_trial(candidate indices, trial seed)` trains.

  Args:
    run_trial: trains one candidate (given as indices into `space`); its
      second argument is the trial's index (for its seeds); returns its
      TrialResult (its `score` is noisy).
    space: the candidates.
    strategy: random | grid | qiea.
    trials: T (grid: at most T; qiea: P × floor(T / P)); random: E[K].
    seed: seeds the search's own draws and every trial's privacy seed.
    shape: η of K's distribution (random only).
    population: P, the QIEA population.
    qiea_config: the QIEA constants.
    log: receives a line per trial (none for random search: its trials,
      their scores and their number stay hidden; only the best is
      released).
  """
  rng = np.random.default_rng([seed, streams.SEARCH_STREAM])
  done = []

  def run(indices) -> float:
    result = run_trial(indices, len(done))
    done.append(result)
    # Repeat-and-select covers the best trial's output alone, with K
    # hidden (revealing K, or any other trial, is not covered).
    # Composition covers every trial.
    if strategy != 'random':
      log(f'trial {len(done)}: {result.candidate} '
          f'σ={result.noise_multiplier:.3g} score {result.score:.4f} (noisy '
          'training accuracy)')
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

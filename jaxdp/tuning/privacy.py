"""What tuning spends: per-trial σ and the total (ε, δ), tuning included.

A trial trains one candidate with DP-SGD (Poisson sampling, q = B / N, steps
= ceil(epochs / q)) and releases its score, a noisy count of correct
predictions on the same data (sensitivity 1, Gaussian noise σ_s). Its RDP at
order α is

    steps · RDP_SGM(q, σ; α) + α / (2 σ_s²).

Candidates differ in q and steps, so a trial's RDP is bounded by the maximum
over the space at every order (the candidate is drawn or chosen without
looking at the data; by quasi-convexity of Rényi divergence a mixture over
candidates is no worse than its worst one). σ of each candidate is
calibrated so that one trial spends at most ε_trial; ε_trial is then the
largest value whose total meets the target:

* `composition` (grid, qiea): T trials, each possibly chosen from the
  scores of the earlier ones: RDP adds, T · RDP_trial.
* `repeat_and_select` (random): K ~ truncated negative binomial (shape η,
  mean μ) or Poisson (η = ∞) i.i.d. trials, only the best released:
  Papernot & Steinke 2022, Theorems 2 and 6, through dp-accounting.

Everything is RDP at the integer orders of `jaxdp.accounting.sampled_gaussian_rdp`
(exact for the subsampled Gaussian at those orders), so planning a search
takes milliseconds.
"""

import dataclasses
import math

import numpy as np
from dp_accounting.rdp import rdp_privacy_accountant

from jaxdp.accounting import sampled_gaussian_rdp as sgm
from jaxdp.errors import ConfigError
from jaxdp.mechanism import steps_from_epochs

ACCOUNTINGS = ('composition', 'repeat_and_select')


def trial_rdp(q: float, steps: int, sigma: float,
              score_noise: float) -> np.ndarray:
  """RDP of one trial (training, then its noisy count of correct ones)."""
  return (steps * sgm.poisson_gaussian_rdp(q, sigma)
          + sgm.ORDERS / (2.0 * score_noise ** 2))


def _trial_epsilons(qs, steps, sigmas, score_noise, delta):
  rdps = (np.asarray(steps)[:, None] * sgm.poisson_gaussian_rdp(
      np.asarray(qs)[:, None], np.asarray(sigmas)[:, None])[:, 0, :]
          + sgm.ORDERS / (2.0 * score_noise ** 2))
  return np.array([sgm.epsilon(r, delta)[0] for r in rdps])


def calibrate_sigmas(qs, steps, score_noise: float, epsilon_trial: float,
                     delta: float) -> np.ndarray:
  """Per candidate, the smallest σ (to 0.1%) whose trial ε ≤ epsilon_trial;
  inf where the score's release alone exceeds it. Vectorised over the
  candidates' (q, steps)."""
  eps = lambda s: _trial_epsilons(qs, steps, s, score_noise, delta)
  lo, hi = np.full(len(qs), 0.05), np.ones(len(qs))
  for _ in range(20):  # Grow the bracket to σ = 2^20 at most.
    over = eps(hi) > epsilon_trial
    if not over.any():
      break
    lo, hi = np.where(over, hi, lo), np.where(over, 2 * hi, hi)
  hi = np.where(eps(hi) > epsilon_trial, np.inf, hi)
  finite = np.isfinite(hi)
  while np.any(hi[finite] / lo[finite] > 1.001):
    mid = np.where(finite, np.sqrt(lo * np.where(finite, hi, 1.0)), 1.0)
    ok = eps(mid) <= epsilon_trial
    hi = np.where(finite & ok, mid, hi)
    lo = np.where(finite & ~ok, mid, lo)
  return hi


def total_rdp(per_trial: np.ndarray, accounting: str, trials: float,
              shape: float) -> np.ndarray:
  """RDP of the whole search from one trial's (worst-case) RDP."""
  if accounting == 'composition':
    return trials * per_trial
  return np.asarray(rdp_privacy_accountant._compute_rdp_repeat_and_select(  # pylint: disable=protected-access
      sgm.ORDERS, per_trial, trials, shape))


@dataclasses.dataclass(frozen=True)
class Plan:
  """The per-trial σ of every (batch size, epochs), and what it all spends."""

  epsilon_per_trial: float  # ε of one trial (its worst candidate), at δ.
  epsilon_total: float  # ε of the whole search, tuning included, at δ.
  delta: float
  sigmas: dict  # (batch_size, epochs) -> σ.
  steps: dict  # (batch_size, epochs) -> steps.
  accounting: str
  trials: float  # T (composition) or the mean of K (repeat_and_select).
  shape: float  # η of K's distribution (repeat_and_select).

  def to_json(self) -> dict:
    return {'epsilon_per_trial': self.epsilon_per_trial,
            'epsilon_total': self.epsilon_total, 'delta': self.delta,
            'accounting': self.accounting, 'trials': self.trials,
            'shape': self.shape if math.isfinite(self.shape) else 'poisson',
            'sigmas': {f'B={b},epochs={e:g}': s
                       for (b, e), s in self.sigmas.items()}}


def plan(space, num_examples: int, accounting: str, trials: float,
         target_epsilon: float, delta: float, score_noise: float,
         shape: float = 1.0) -> Plan:
  """Calibrates every candidate's σ so the whole search meets the target.

  Args:
    space: the `SearchSpace` (its batch sizes and epochs matter here).
    num_examples: N, the private training examples a trial samples from.
    accounting: 'composition' or 'repeat_and_select'.
    trials: T, or the mean number of trials for repeat_and_select.
    target_epsilon: the total ε the search must not exceed, at `delta`.
    delta: δ of the total guarantee.
    score_noise: σ_s of each trial's noisy count of correct predictions.
    shape: η of the truncated negative binomial (inf: Poisson).

  Returns:
    A Plan whose epsilon_total ≤ target_epsilon.
  """
  if accounting not in ACCOUNTINGS:
    raise ValueError(f'unknown accounting {accounting!r}')
  shapes = {(b, e): (b / num_examples, steps_from_epochs(e, b / num_examples))
            for b, e in space.privacy_shapes()}
  for (b, _), (q, _) in shapes.items():
    if not 0 < q < 1:
      raise ConfigError('--batch_size',
                        f'B={b} is not below N={num_examples}',
                        'use batch sizes smaller than the training set')

  keys = list(shapes)
  qs = [shapes[k][0] for k in keys]
  steps = [shapes[k][1] for k in keys]

  def spend(epsilon_trial: float):
    sigmas = dict(zip(keys, calibrate_sigmas(qs, steps, score_noise,
                                             epsilon_trial, delta).tolist()))
    if not all(math.isfinite(s) for s in sigmas.values()):
      return math.inf, sigmas, None
    worst = np.max([trial_rdp(q, steps, sigmas[k], score_noise)
                    for k, (q, steps) in shapes.items()], axis=0)
    total = sgm.epsilon(total_rdp(worst, accounting, trials, shape),
                        delta)[0]
    return total, sigmas, sgm.epsilon(worst, delta)[0]

  lo, hi = 0.0, target_epsilon
  best = None
  for _ in range(40):  # Bisection on ε_trial: the total grows with it.
    mid = (lo + hi) / 2
    total, sigmas, per_trial = spend(mid)
    if per_trial is None:  # The score's noise alone exceeds ε_trial.
      lo = mid
    elif total <= target_epsilon:
      lo, best = mid, (total, sigmas, per_trial)
    else:
      hi = mid
    if best is not None and hi - lo < 1e-3 * target_epsilon:
      break
  if best is None:
    raise ConfigError(
        'target_epsilon',
        f'ε={target_epsilon} cannot pay for {trials:g} trials with '
        f'score noise σ_s={score_noise}',
        'raise the target ε, run fewer trials, or raise --score_noise')
  total, sigmas, per_trial = best
  return Plan(epsilon_per_trial=per_trial, epsilon_total=total, delta=delta,
              sigmas=sigmas, steps={k: s for k, (_, s) in shapes.items()},
              accounting=accounting, trials=trials, shape=shape)

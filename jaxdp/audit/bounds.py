"""Lower bounds on ε from an audit's guesses (host-side statistics).

An audit runs a training algorithm that claims (ε, δ)-DP on data where some
canaries are present and others absent, then guesses which were present. If
the guesses are right more often than (ε, δ)-DP allows, the claim is false.
Both bounds here are hypothesis tests: "the algorithm is (ε, δ)-DP" is
rejected at level 1 − confidence for every ε below the returned value.

**One run** (Steinke, Nasr & Jagielski 2023, Theorem 5.2): m canaries, each
present independently with probability ½; the auditor makes r guesses
(abstaining on the rest) of which v are right. Under (ε, δ)-DP,

    P[v or more right] ≤ P[Bin(r, p) ≥ v]
                         + 2mδ · max_{1≤i≤v} P[v − i ≤ Bin(r, p) < v] / i,

with p = e^ε / (1 + e^ε), the accuracy of ε-randomised response. The bound is
the largest ε at which this p-value is still below 1 − confidence.

**Many runs** (Jagielski et al. 2020; Nasr et al. 2021): one canary, present
in some runs and absent in others; a threshold on the score gives false
positive and false negative rates. (ε, δ)-DP implies
FPR·e^ε + FNR ≥ 1 − δ and FNR·e^ε + FPR ≥ 1 − δ, so Clopper–Pearson upper
limits on both rates give ε ≥ log((1 − δ − FNR⁺) / FPR⁺) and its mirror.

A bound proves a leak only where it exceeds the claimed ε. A bound below the
claim proves nothing by itself: it shows only that this audit could not see
more (see `max_certifiable`).
"""

import math

import numpy as np
from scipy import optimize
from scipy import stats


def _randomised_response_accuracy(epsilon: float) -> float:
  return 1.0 / (1.0 + math.exp(-epsilon))


def one_run_p_value(num_canaries: int, guesses: int, correct: int,
                    epsilon: float, delta: float) -> float:
  """P[≥ `correct` right guesses] for an (ε, δ)-DP algorithm (the bound above).

  Args:
    num_canaries: m, canaries each present with probability ½.
    guesses: r ≤ m guesses made (abstentions excluded).
    correct: v ≤ r of them right.
    epsilon, delta: the (ε, δ) of the null hypothesis.
  """
  if not 0 <= correct <= guesses <= num_canaries:
    raise ValueError(f'need 0 <= correct ({correct}) <= guesses ({guesses}) '
                     f'<= canaries ({num_canaries})')
  if epsilon < 0 or not 0 <= delta <= 1:
    raise ValueError(f'need ε >= 0 and δ in [0, 1], got {epsilon}, {delta}')
  p = _randomised_response_accuracy(epsilon)
  tail = stats.binom.sf(correct - 1, guesses, p)  # P[Bin ≥ v]
  if delta == 0 or correct == 0:
    return float(min(tail, 1.0))
  # P[v − i ≤ Bin < v] for i = 1..v, divided by i.
  below = stats.binom.cdf(correct - 1, guesses, p)
  lower = stats.binom.cdf(np.arange(correct - 2, -2, -1), guesses, p)
  spread = np.max((below - lower) / np.arange(1, correct + 1))
  return float(min(tail + 2 * num_canaries * delta * spread, 1.0))


def one_run_lower_bound(num_canaries: int, guesses: int, correct: int,
                        delta: float, confidence: float = 0.95) -> float:
  """The largest ε that `correct` of `guesses` refutes at `confidence`.

  0 when even ε = 0 is not refuted. Exact to 1e-6 (bisection).

  >>> round(one_run_lower_bound(1000, 100, 100, 0.0, 0.95), 2)
  3.49
  """
  level = 1.0 - confidence
  if not 0 < level < 1:
    raise ValueError(f'confidence must be in (0, 1), got {confidence}')
  p_value = lambda e: one_run_p_value(num_canaries, guesses, correct, e, delta)
  if p_value(0.0) >= level:
    return 0.0
  high = 1.0
  while p_value(high) < level:
    high *= 2
    if high > 1e3:
      return math.inf
  return float(optimize.brentq(lambda e: p_value(e) - level, 0.0, high,
                               xtol=1e-7))


def max_certifiable(num_canaries: int, guesses: int, delta: float,
                    confidence: float = 0.95) -> float:
  """The bound if every one of `guesses` guesses were right: the most this
  audit could ever show."""
  return one_run_lower_bound(num_canaries, guesses, guesses, delta, confidence)


def clopper_pearson_upper(successes: int, trials: int,
                          confidence: float) -> float:
  """One-sided upper confidence limit of a binomial proportion."""
  if trials == 0 or successes >= trials:
    return 1.0
  return float(stats.beta.ppf(confidence, successes + 1, trials - successes))


def multi_run_lower_bound(false_positives: int, negatives: int,
                          false_negatives: int, positives: int, delta: float,
                          confidence: float = 0.95) -> float:
  """ε refuted by a threshold test's error counts over independent runs.

  `negatives` runs without the canary (`false_positives` of them flagged),
  `positives` with it (`false_negatives` missed). Both rates get a
  Clopper–Pearson upper limit, each at (1 + confidence) / 2 so that together
  they hold at `confidence`.
  """
  per_rate = (1.0 + confidence) / 2.0
  fpr = clopper_pearson_upper(false_positives, negatives, per_rate)
  fnr = clopper_pearson_upper(false_negatives, positives, per_rate)
  bounds = [0.0]
  for a, b in ((fpr, fnr), (fnr, fpr)):
    if a > 0 and 1 - delta - b > 0:
      bounds.append(math.log((1 - delta - b) / a))
  return max(bounds)

"""The most a membership attack may achieve against a DP guarantee.

Any test that tells "trained with x" from "trained without x" against an
(ε, δ)-DP algorithm has, at false positive rate FPR (Kairouz et al. 2015),

    TPR ≤ min(e^ε · FPR + δ, 1 − e^{−ε} · (1 − δ − FPR)).

An accountant gives a whole privacy profile ε(δ), each point of which bounds
the TPR; the ceiling is the lowest of them. A grid of δ values gives a valid,
slightly loose ceiling (every grid point is a true bound).
"""

import numpy as np

from jaxdp import accounting


def tpr_ceiling(fpr, epsilon: float, delta: float) -> np.ndarray:
  """The TPR bound of one (ε, δ) pair at each FPR in `fpr`."""
  fpr = np.asarray(fpr, np.float64)
  first = np.exp(epsilon) * fpr + delta
  second = 1.0 - np.exp(-epsilon) * (1.0 - delta - fpr)
  return np.clip(np.minimum(first, second), 0.0, 1.0)


def profile_ceiling(fpr, mechanism, deltas=None) -> np.ndarray:
  """The TPR bound of a mechanism's whole privacy profile (min over δ)."""
  if not mechanism.is_private:
    return np.ones_like(np.asarray(fpr, np.float64))
  if deltas is None:
    deltas = np.logspace(-12, -0.5, 48)
  accountant = accounting.make_accountant(mechanism.accountant,
                                          mechanism.neighboring_relation)
  accountant.compose(mechanism.dp_event())
  ceiling = np.ones_like(np.asarray(fpr, np.float64))
  for delta in deltas:
    eps = accountant.get_epsilon(float(delta))
    ceiling = np.minimum(ceiling, tpr_ceiling(fpr, eps, float(delta)))
  return ceiling

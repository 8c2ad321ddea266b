"""Membership-inference statistics: ROC curves, and LiRA's per-example fits.

Scores are oriented so that higher means "member". Everything here is
host-side NumPy on scores the attacks produced.

LiRA (Carlini et al. 2022, "Membership Inference Attacks From First
Principles"): train shadow models, each on a random half of the candidates;
for each candidate, fit one Gaussian to its score in the models that trained
on it and one to its score in the models that did not; the attack score of a
new model is the log-likelihood ratio of the two fits. Scores are the
logit-scaled confidence log(p_y / (1 − p_y)), which is close to Gaussian.
"""

import dataclasses

import numpy as np
from scipy import stats

# Fits on this few shadow models or fewer use the pooled variance of their
# side (LiRA's "fixed variance" variant), which is steadier with few shadows.
_MIN_MODELS_FOR_OWN_VARIANCE = 16


@dataclasses.dataclass(frozen=True)
class Roc:
  fpr: np.ndarray  # Increasing, from 0 to 1.
  tpr: np.ndarray
  negatives: int  # Non-members the rates were measured on.

  @property
  def auc(self) -> float:
    return float(np.trapezoid(self.tpr, self.fpr))

  def tpr_at(self, fpr: float) -> float:
    """The largest TPR of a threshold whose FPR is at most `fpr`."""
    ok = self.fpr <= fpr + 1e-12
    return float(self.tpr[ok].max()) if ok.any() else 0.0


def roc(scores: np.ndarray, members: np.ndarray) -> Roc:
  """The ROC curve of thresholding `scores` (higher = member); ties at once."""
  scores = np.asarray(scores, np.float64).ravel()
  members = np.asarray(members, bool).ravel()
  positives, negatives = members.sum(), (~members).sum()
  if positives == 0 or negatives == 0:
    raise ValueError('the ROC needs members and non-members, got '
                     f'{positives} and {negatives}')
  order = np.argsort(-scores, kind='stable')
  scores, members = scores[order], members[order]
  # Cut after the last of each run of equal scores.
  cut = np.r_[np.flatnonzero(scores[1:] != scores[:-1]), len(scores) - 1]
  tp = np.cumsum(members)[cut]
  fp = np.cumsum(~members)[cut]
  return Roc(fpr=np.r_[0.0, fp / negatives], tpr=np.r_[0.0, tp / positives],
             negatives=int(negatives))


def logit_confidence(log_probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """log(p_y / (1 − p_y)) from log-softmax outputs [..., classes], stably."""
  log_probs = np.asarray(log_probs, np.float64)
  labels = np.asarray(labels)
  true = np.take_along_axis(log_probs, labels[..., None], -1)[..., 0]
  others = np.where(np.arange(log_probs.shape[-1]) == labels[..., None],
                    -np.inf, log_probs)
  return true - np.logaddexp.reduce(others, axis=-1)


def lira_scores(observed: np.ndarray, members: np.ndarray) -> np.ndarray:
  """Leave-one-model-out LiRA scores.

  Args:
    observed: [models, candidates] score of each candidate in each model.
    members: [models, candidates] whether the model trained on it.

  Returns:
    [models, candidates] log-likelihood ratio (member vs not) of each
    candidate in each model, with that model's own score left out of the
    fits: every model is in turn the target, the rest its shadows.
  """
  observed = np.asarray(observed, np.float64)
  members = np.asarray(members, bool)
  num_models = observed.shape[0]
  if num_models < 3:
    raise ValueError(f'LiRA needs at least 3 models, got {num_models}')
  out = np.empty_like(observed)
  own_variance = num_models - 1 > _MIN_MODELS_FOR_OWN_VARIANCE
  for target in range(num_models):
    shadow = np.arange(num_models) != target
    obs, mem = observed[shadow], members[shadow]
    # A non-finite score (a diverged shadow) is missing, not a number.
    seen = np.isfinite(obs)
    obs = np.where(seen, obs, 0.0)
    target_score = np.where(np.isfinite(observed[target]), observed[target],
                            0.0)
    ratio = np.zeros(observed.shape[1])
    both_sides = np.ones(observed.shape[1], bool)
    for side, sign in ((mem & seen, 1.0), (~mem & seen, -1.0)):
      count = side.sum(0)
      # An own variance needs two scores on the side; a pooled one, one.
      both_sides &= count >= (2 if own_variance else 1)
      mean = np.where(count > 0, (obs * side).sum(0) / np.maximum(count, 1),
                      0.0)
      resid = (obs - mean) * side
      if not own_variance:
        # One mean was fitted per candidate seen on this side.
        dof = side.sum() - (count > 0).sum()
        var = np.full_like(mean, (resid ** 2).sum() / max(dof, 1))
      else:
        var = (resid ** 2).sum(0) / np.maximum(count - 1, 1)
      std = np.sqrt(np.maximum(var, 1e-12))
      ratio += sign * stats.norm.logpdf(target_score, mean, std)
    # A candidate the shadows saw on one side only has no ratio: score 0
    # (no evidence), not one Gaussian's density. So has a non-finite target
    # score.
    ratio = np.where(np.isfinite(observed[target]), ratio, 0.0)
    out[target] = np.where(both_sides, ratio, 0.0)
  return out

"""How an auditor scores each canary (higher = "present").

White-box (gradient canaries), from x[t], the privatised gradient on the
canary's coordinate at step t in units of one clipped canary gradient. The
mechanism states x = p + C⁻¹z (`NoiseModel`): p[t] = 1 when the canary took
part in step t, which it may only at its eligible steps (every step, or the
steps of its cyclic group) and then does with probability q; z i.i.d.
N(0, s²); C the identity for DP-SGD, the strategy for correlated noise.

* ``likelihood``: the log-likelihood ratio "present" vs "absent" of the
  stated mechanism. With y = C·x the noise is white; one participation at
  step k adds C's column k, so its matched filter is m_k = (Cᵀy)_k with
  energy e_k = ‖C e_k‖², and the score is
  Σ_k eligible log(1 − q + q·exp((m_k − e_k/2) / s²)).
  For DP-SGD (C = I) this is Σ_t log(1 − q + q·exp((2x[t] − 1) / (2σ²))), and
  for banded C with participations b apart it is exact (the columns of one
  group's steps do not overlap): the Neyman–Pearson optimal score if the
  code does what it claims. For BLT the overlaps are ignored: a valid score,
  no longer the optimal one.
* ``measured_likelihood`` (correlated noise only): the same sum with the
  noise covariance the auditor measures from all canaries' x instead of the
  stated one, m_k = (Σ̂⁻¹x)_k, e_k = (Σ̂⁻¹)_kk. Noise from the wrong inverse
  or repeated draws has directions with far less noise than stated; this
  score finds them. (It needs many more canaries than steps to measure Σ̂.)
* ``spread``: the standard deviation of y over steps. Uninformative for
  fresh noise, perfect if the noise repeats: an absent canary's y is then
  the same number every step.

Any score gives a valid audit (the bounds hold for guesses made from the
output in any way); the stated-mechanism likelihood is the one that is best
when the code is right.

Black-box (input canaries), from the final model only:

* ``confidence``: log(p_y / (1 − p_y)) of the canary's training label
  (ranks like the loss-threshold attack of Yeom et al. 2018).
"""

import dataclasses

import numpy as np
from scipy import linalg

from jaxdp.audit import membership

BLACK_BOX = ('confidence',)

# Σ̂ + RIDGE·(mean variance)·I is inverted: finite even where repeated draws
# leave a direction without noise (which then dominates, as it should).
RIDGE = 1e-9


@dataclasses.dataclass(frozen=True)
class NoiseModel:
  """What a mechanism states of the noise on one canary coordinate."""

  column: np.ndarray  # C's first column; [1.] for independent noise.
  std: float  # s: z's std, in units of one clipped canary gradient.
  rate: float  # q: the chance of taking part in an eligible step.
  period: int  # Eligible steps: t ≡ the canary's group mod period.

  @property
  def correlated(self) -> bool:
    return len(self.column) > 1


def noise_model(mechanism) -> NoiseModel:
  """The `NoiseModel` that `mechanism` claims to run.

  The sampling rate is the sampler's even if the accountant is told
  another: an auditor scores what the code says it runs.
  """
  strategy_of = getattr(mechanism.link, 'strategy', None)
  if strategy_of is None:
    return NoiseModel(np.ones(1), mechanism.noise_multiplier,
                      mechanism.sampling_probability, 1)
  strategy = strategy_of()
  return NoiseModel(strategy.column,
                    mechanism.noise_multiplier * strategy.sensitivity,
                    mechanism.sampler.group_sampling_probability,
                    mechanism.sampler.groups)


def white_box_names(model: NoiseModel) -> tuple:
  """The white-box scores tried on this noise, fixed before any outcome."""
  if model.correlated:
    return ('likelihood', 'measured_likelihood', 'spread')
  return ('likelihood', 'spread')


def _strategy_matrix(model: NoiseModel, steps: int) -> np.ndarray:
  column = np.zeros(steps)
  head = model.column[:steps]
  column[:len(head)] = head
  return linalg.toeplitz(column, np.zeros(steps))


def _eligible(model: NoiseModel, steps: int, groups) -> np.ndarray:
  """bool [steps, m]: the steps each canary may take part in."""
  if model.period == 1:
    return np.ones((steps, len(groups)), bool)
  return (np.arange(steps)[:, None] % model.period) == np.asarray(groups)[None]


def _sum_over_participations(matched, energy, scale, model, groups):
  q = model.rate
  per_step = np.logaddexp(np.log1p(-q),
                          np.log(q) + (matched - energy[:, None] / 2) / scale)
  return np.where(_eligible(model, len(energy), groups), per_step, 0.0).sum(0)


def _decorrelated(x: np.ndarray, model: NoiseModel) -> np.ndarray:
  """y = C·x: white noise if the mechanism is what it states."""
  if not model.correlated:
    return x
  return _strategy_matrix(model, len(x)) @ x


def likelihood(probe_gradients: np.ndarray, model: NoiseModel,
               groups: np.ndarray) -> np.ndarray:
  """[m] log-likelihood ratios of the stated mechanism from x [steps, m]."""
  x = np.asarray(probe_gradients, np.float64)
  # σ = 0 (non-private): any step with x near 1 is decisive; keep it finite.
  var = max(model.std, 1e-3) ** 2
  if not model.correlated:
    return _sum_over_participations(x, np.ones(len(x)), var, model, groups)
  strategy = _strategy_matrix(model, len(x))
  matched = strategy.T @ (strategy @ x)
  energy = (strategy ** 2).sum(0)
  return _sum_over_participations(matched, energy, var, model, groups)


def measured_likelihood(probe_gradients: np.ndarray, model: NoiseModel,
                        groups: np.ndarray) -> np.ndarray:
  """[m] the likelihood with the noise covariance measured across canaries."""
  x = np.asarray(probe_gradients, np.float64)
  covariance = np.atleast_2d(np.cov(x))
  covariance += RIDGE * np.trace(covariance) / len(x) * np.eye(len(x))
  precision = np.linalg.inv(covariance)
  return _sum_over_participations(precision @ x, np.diag(precision), 1.0,
                                  model, groups)


def spread(probe_gradients: np.ndarray, model: NoiseModel) -> np.ndarray:
  """[m] standard deviation over steps of y = C·x."""
  return _decorrelated(np.asarray(probe_gradients, np.float64), model).std(0)


def confidence(canary_log_probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """[m] logit-scaled confidence in each canary's training label."""
  return membership.logit_confidence(canary_log_probs, labels)


def headline(white_box: bool) -> str:
  """The score whose ROC is reported, fixed before any outcome is seen."""
  return 'likelihood' if white_box else 'confidence'


def all_scores(observation, labels: np.ndarray, mechanism) -> dict:
  """{score name: [m] scores} for the kind of canary `observation` holds.

  The headline score comes first. A non-finite score (NaN from a diverged
  model) counts as least likely present, everywhere alike.
  """
  x = observation.probe_gradients
  if x is not None:
    model = noise_model(mechanism)
    groups = observation.canary_groups
    score = {'likelihood': lambda: likelihood(x, model, groups),
             'measured_likelihood': lambda: measured_likelihood(x, model,
                                                                groups),
             'spread': lambda: spread(x, model)}
    scored = {name: score[name]() for name in white_box_names(model)}
  else:
    scored = {'confidence': confidence(observation.canary_log_probs, labels)}
  return {name: np.nan_to_num(s, nan=-np.inf) for name, s in scored.items()}

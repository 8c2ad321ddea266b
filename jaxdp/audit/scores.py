"""How an auditor scores each canary (higher = "present").

White-box (gradient canaries), from x[t], the privatised gradient on the
canary's coordinate at step t in units of one clipped canary gradient:

* ``likelihood``: Σ_t log(1 − q + q·exp((2x[t] − 1) / (2σ²))), the
  log-likelihood ratio "present" vs "absent" of the stated mechanism (each
  step adds 1 with probability q, plus N(0, σ²)). The Neyman–Pearson optimal
  score if the code does what it claims.
* ``spread``: the standard deviation of x[t] over steps. Uninformative for
  fresh noise, perfect if the noise repeats: an absent canary's x is then
  the same number every step.

Black-box (input canaries), from the final model only:

* ``confidence``: log(p_y / (1 − p_y)) of the canary's training label
  (ranks like the loss-threshold attack of Yeom et al. 2018).
"""

import numpy as np

from jaxdp.audit import membership

WHITE_BOX = ('likelihood', 'spread')
BLACK_BOX = ('confidence',)


def likelihood(probe_gradients: np.ndarray, sampling_probability: float,
               noise_multiplier: float) -> np.ndarray:
  """[m] log-likelihood ratios from x [steps, m] (see module docstring)."""
  x = np.asarray(probe_gradients, np.float64)
  # σ = 0 (non-private): any step with x near 1 is decisive; keep it finite.
  var = max(noise_multiplier, 1e-3) ** 2
  q = sampling_probability
  per_step = np.logaddexp(np.log1p(-q), np.log(q) + (2 * x - 1) / (2 * var))
  return per_step.sum(0)


def spread(probe_gradients: np.ndarray) -> np.ndarray:
  """[m] standard deviation over steps of x [steps, m]."""
  return np.asarray(probe_gradients, np.float64).std(0)


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
  if observation.probe_gradients is not None:
    # The sampler's q and the mechanism's σ: what the code says it runs
    # (the sampling rate is the sampler's even if the accountant is told
    # another).
    scored = {'likelihood': likelihood(observation.probe_gradients,
                                       mechanism.sampling_probability,
                                       mechanism.noise_multiplier),
              'spread': spread(observation.probe_gradients)}
  else:
    scored = {'confidence': confidence(observation.canary_log_probs, labels)}
  return {name: np.nan_to_num(s, nan=-np.inf) for name, s in scored.items()}

"""Noise for the clipped sum: the links of the optax chain that privatise it.

  gaussian   N(0, σ²C²) once per step on the clipped sum, then ÷ B_expected
  adaptive   the same step with a quantile-tracking C (Andrew et al. 2021)
  schedules  σ_t = σ · f(t), piecewise constant
"""

from jaxdp.noise.gaussian import AdaptiveNoiseState
from jaxdp.noise.gaussian import NoiseState
from jaxdp.noise.gaussian import add_noise_and_normalize
from jaxdp.noise.gaussian import gaussian_like
from jaxdp.noise.gaussian import noise_steps
from jaxdp.noise.gaussian import noisy_mean
from jaxdp.noise.gaussian import round_up_f32
from jaxdp.noise.gaussian import value_at
from jaxdp.noise.gaussian import with_noise_key
from jaxdp.noise.gaussian import with_noise_step

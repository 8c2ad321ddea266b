"""Adaptive clipping (Andrew et al. 2021): C follows a private quantile.

At each step, besides the noisy clipped sum, the mechanism releases how many
examples of the batch were *not* clipped,

    b̃ = Σ_i 1[‖g_i‖ ≤ C_t] + N(0, σ_b²),

and moves C geometrically toward the γ-quantile of the gradient norms:

    C_{t+1} = C_t · exp(−η (b̃ / B − γ)),

with B the expected batch size. The count has sensitivity 1 (one example adds,
removes or flips one indicator), the sum Δ_S = C_t (add/remove) or 2 C_t
(replace). Released together with independent noise, the pair is one Gaussian
mechanism. With Δ_S = r·C_t (r = 1 or 2), its normalised sensitivity is
sqrt((r / σ_Δ)² + σ_b⁻²) for noise σ_Δ·C_t on the sum; a fixed-C step with
multiplier σ has r / σ. So choosing

    σ_Δ = (σ⁻² − (r σ_b)⁻²)^(−1/2)

makes the step *exactly* as private as a fixed-C step with multiplier σ:
the gradient noise pays for the count, and the DpEvent is unchanged. (Andrew
et al. 2021, Theorem 1, split σ likewise for their centred count of
sensitivity ½; this count is uncentred, sensitivity 1, so σ_b buys less.)
C_t itself is a function of earlier releases only: public post-processing.
"""

import dataclasses
import math
from typing import NamedTuple, Optional

import dp_accounting
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdp import streams
from jaxdp.noise import gaussian as noise
from jaxdp.noise import schedules
from jaxdp.errors import ConfigError



class AdaptiveNoiseState(NamedTuple):
  """The state of the adaptive noise link."""

  step: jax.Array  # int32 scalar: logical steps privatised so far.
  key: jax.Array  # typed PRNG key; the step's noise uses fold_in(key, step).
  clip_norm: jax.Array  # float32: C_t, the clip norm of the next step.


@dataclasses.dataclass(frozen=True)
class AdaptiveClipping:
  """Settings of the quantile tracking (`config.dp.adaptive_clip_*`)."""

  target_quantile: float  # γ: the fraction of examples left unclipped.
  learning_rate: float  # η of the geometric update.
  count_noise: float  # σ_b: std of the noise on the unclipped count.


def gradient_noise_multiplier(sigma: float, count_noise: float,
                              relation: dp_accounting.NeighboringRelation
                              ) -> float:
  """σ_Δ that, with the count's σ_b, spends exactly what σ alone would."""
  ratio = 2.0 if relation == dp_accounting.NeighboringRelation.REPLACE_ONE \
      else 1.0  # Δ_S / C
  left = sigma ** -2 - (ratio * count_noise) ** -2
  if not left > 0:
    raise ConfigError(
        'dp.adaptive_clip_count_noise',
        f'σ_b={count_noise:.4g} leaves no privacy for the gradient at '
        f'σ={sigma:.4g} (need σ_b > {sigma / ratio:.4g})',
        'raise dp.adaptive_clip_count_noise (Andrew et al. use B/20) or the '
        'noise multiplier (a lower target ε needs more)')
  return left ** -0.5


def from_config(dp, expected_batch_size: float) -> Optional[AdaptiveClipping]:
  """The adaptive-clipping settings of `config.dp`; None if it is off."""
  gamma = dp.adaptive_clip_quantile
  if gamma == 0:
    return None
  if not 0 < gamma < 1:
    raise ConfigError('dp.adaptive_clip_quantile',
                      f'must be in (0, 1) (or 0 = off), got {gamma}',
                      'use e.g. 0.5 to track the median gradient norm')
  eta = dp.adaptive_clip_learning_rate
  if not (eta > 0 and math.isfinite(eta)):
    raise ConfigError('dp.adaptive_clip_learning_rate',
                      f'must be > 0, got {eta}', 'use e.g. 0.2')
  sigma_b = dp.adaptive_clip_count_noise
  if sigma_b is None:
    sigma_b = expected_batch_size / 20.0  # Andrew et al. 2021's default.
  if not (sigma_b > 0 and math.isfinite(sigma_b)):
    raise ConfigError('dp.adaptive_clip_count_noise',
                      f'must be > 0, got {sigma_b}',
                      'leave it unset for B/20, or set a positive std')
  return AdaptiveClipping(float(gamma), float(eta), float(sigma_b))


def add_noise_and_adapt(gradient_noise_multipliers: np.ndarray,
                        expected_batch_size: float, key: jax.Array,
                        initial_clip_norm: float, settings: AdaptiveClipping
                        ) -> optax.GradientTransformationExtraArgs:
  """The noise link of an adaptive-clipping run.

  `gradient_noise_multipliers` holds σ_Δ of every planned step ([1] for a
  constant σ; under a noise schedule each step's own, since σ_Δ is not
  proportional to σ_t). Its update takes the clipped sum (clipped at the
  state's C_t) and the keyword `unclipped_count`; it returns the privatised mean gradient and
  the state with C_{t+1}. `current_clip_norm(opt_state)` reads C_t for the
  clipping of the next step. Put it first in the chain.
  """
  b = float(expected_batch_size)
  count_std = noise.round_up_f32(settings.count_noise)  # Never below σ_b.

  def init_fn(params):
    del params
    return AdaptiveNoiseState(step=jnp.zeros([], jnp.int32), key=jnp.copy(key),
                              clip_norm=jnp.asarray(initial_clip_norm,
                                                    jnp.float32))

  def update_fn(clipped_sum, state, params=None, *, unclipped_count, **extra):
    del params, extra
    # The float32 product may round down by half an ulp: the multipliers
    # were rounded up by two (gradient_noise_multipliers).
    std = noise.value_at(gradient_noise_multipliers,
                         state.step) * state.clip_norm
    mean = noise.noisy_mean(clipped_sum, state.key, state.step, std, b)
    count_key = jax.random.fold_in(jax.random.fold_in(state.key, state.step),
                                   streams.COUNT_STREAM)
    noisy = unclipped_count + count_std * jax.random.normal(
        count_key, (), jnp.float32)
    clip_norm = state.clip_norm * jnp.exp(
        -settings.learning_rate * (noisy / b - settings.target_quantile))
    return mean, AdaptiveNoiseState(step=state.step + 1, key=state.key,
                                    clip_norm=clip_norm)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def current_clip_norm(opt_state) -> jax.Array:
  """C_t held by the AdaptiveNoiseState inside `opt_state`."""
  found = [s.clip_norm for s in jax.tree_util.tree_leaves(
      opt_state, is_leaf=lambda s: isinstance(s, AdaptiveNoiseState))
           if isinstance(s, AdaptiveNoiseState)]
  if len(found) != 1:
    raise ValueError(f'expected one AdaptiveNoiseState, found {len(found)}')
  return found[0]


def gradient_noise_multipliers(mechanism, schedule: schedules.NoiseSchedule,
                               settings: AdaptiveClipping) -> np.ndarray:
  """σ_Δ of each planned step ([1] for a constant σ)."""
  sigmas = mechanism.noise_multiplier * (
      np.ones(1) if schedule.is_constant
      else schedule.step_factors(mechanism.num_steps))
  values = {s: gradient_noise_multiplier(s, settings.count_noise,
                                         mechanism.neighboring_relation)
            for s in np.unique(sigmas)}
  # Rounded up to float32, then one more ulp for the float32 product
  # with C_t: never less noise than accounted.
  return np.nextafter(noise.round_up_f32([values[s] for s in sigmas]),
                      np.float32(np.inf))


@dataclasses.dataclass(frozen=True)
class AdaptiveLink:
  """The noise link of adaptive clipping (`dp.adaptive_clip_quantile` > 0,
  or `dp.noise_mechanism='adaptive'`): it owns C_t, and its step input is
  the unclipped count. Its DpEvent is the fixed-C run's (the count is paid
  from σ)."""

  schedule: schedules.NoiseSchedule
  adaptive: AdaptiveClipping
  name = 'adaptive'
  state_type = AdaptiveNoiseState
  # The config field behind each key of settings().
  FIELDS = {'noise_mechanism': 'dp.noise_mechanism',
            'noise_schedule': 'dp.noise_schedule',
            'adaptive_clipping': 'dp.adaptive_clip_quantile'}

  @classmethod
  def from_config(cls, dp, expected_batch_size: float,
                  num_steps: int) -> 'AdaptiveLink':
    del num_steps  # The schedule is given per step.
    if dp.adaptive_clip_quantile == 0:
      raise ConfigError('dp.adaptive_clip_quantile',
                        'dp.noise_mechanism=adaptive needs the quantile C '
                        'tracks', 'set e.g. dp.adaptive_clip_quantile=0.5')
    schedule = schedules.from_config(dp)
    settings = from_config(dp, expected_batch_size)
    if dp.noise_multiplier == 0 or math.isinf(dp.clip_norm):
      raise ConfigError('dp.adaptive_clip_quantile',
                        'adaptive clipping needs a private run (σ > 0, '
                        'finite C)',
                        'set dp.adaptive_clip_quantile=0 for this baseline')
    return cls(schedule, settings)

  def check(self, mechanism) -> None:
    """ConfigError if the count leaves no noise for the gradient at this σ
    (so the error comes before training)."""
    gradient_noise_multipliers(mechanism, self.schedule, self.adaptive)

  def pieces(self, mechanism) -> list:
    return noise.sampled_gaussian_pieces(mechanism, self.schedule)

  def releases(self, mechanism) -> list:
    first = self.schedule.pieces(mechanism.num_steps)[0][2]
    sigma_delta = gradient_noise_multiplier(
        mechanism.noise_multiplier * first, self.adaptive.count_noise,
        mechanism.neighboring_relation)
    return [('clipped_sum', sigma_delta * mechanism.clip_norm,
             mechanism.sensitivity),
            ('unclipped_count', self.adaptive.count_noise, 1.0)]

  def transform(self, mechanism, key: jax.Array):
    return add_noise_and_adapt(
        gradient_noise_multipliers(mechanism, self.schedule, self.adaptive),
        mechanism.expected_batch_size, key, mechanism.clip_norm,
        self.adaptive)

  def clip_norm(self, opt_state) -> jax.Array:
    return current_clip_norm(opt_state)

  def step_inputs(self, mask, stats) -> dict:
    # Public once noised by the link: how many real examples kept their
    # gradient whole.
    return {'unclipped_count': jnp.sum(
        mask & ~stats.dropped & ~stats.clipped).astype(jnp.float32)}

  def settings(self) -> dict:
    return {'noise_mechanism': self.name,
            'noise_schedule': self.schedule.to_json(),
            'adaptive_clipping': dataclasses.asdict(self.adaptive)}

  def summary(self) -> dict:
    return {'noise_schedule': self.schedule.to_json(),
            'adaptive_clipping': dataclasses.asdict(self.adaptive)}

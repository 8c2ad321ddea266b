"""Gaussian noise for the clipped sum, as an optax gradient transformation.

`add_noise_and_normalize` turns the clipped *sum* S of a logical step into the
privatised mean gradient

    ĝ = (S + N(0, std² I)) / B_expected,   std = σ · C,

where B_expected = q · N is the *expected* batch size. B_expected is public;
the realised batch size is not, so dividing by it would leak. The noise is
drawn once per logical step from `fold_in(key, step)`, with `step` counted in
the transformation's own state: a resumed run (same key, same step) redraws
exactly the same noise, and no two steps share noise. Under a noise schedule
(`jaxdp.noise.schedules`) the std of step t is std · f(t), f indexed by the
same counter, so a rolled-back or resumed run stays on the accounted schedule.

Put it first in an `optax.chain`; everything after it (momentum, Adam, weight
decay, schedules) is post-processing and costs no privacy:

    tx = optax.chain(add_noise_and_normalize(σC, B, key), optax.adam(1e-3))
"""

import dataclasses
import math
from typing import NamedTuple, Optional

import dp_accounting

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdp.noise import schedules


class NoiseState(NamedTuple):
  step: jax.Array  # int32 scalar: logical steps privatised so far.
  key: jax.Array  # typed PRNG key; the step's noise uses fold_in(key, step).


def gaussian_like(tree, key: jax.Array, std: float):
  """Independent N(0, std²) noise with the structure and dtypes of `tree`."""
  leaves, treedef = jax.tree_util.tree_flatten(tree)
  keys = jax.random.split(key, len(leaves))
  # std may be traced (a schedule's); the noise keeps each leaf's dtype.
  noise = [(std * jax.random.normal(k, jnp.shape(x), jnp.result_type(x))
            ).astype(jnp.result_type(x)) for k, x in zip(keys, leaves)]
  return jax.tree_util.tree_unflatten(treedef, noise)


def round_up_f32(values) -> np.ndarray:
  """`values` as float32, rounded up where float32 would round down: the
  noise drawn is never below the std the accountant was told."""
  exact = np.asarray(values, np.float64)
  out = exact.astype(np.float32)
  return np.where(out < exact, np.nextafter(out, np.float32(np.inf)), out)


def value_at(per_step: np.ndarray, step: jax.Array) -> jax.Array:
  """per_step[step] of a schedule's per-step values ([1]: a constant).

  Past the last planned step (a run extended after rollbacks) the last
  value holds, as the accountant assumes.
  """
  values = jnp.asarray(per_step, jnp.float32)
  return values[jnp.minimum(step, values.shape[0] - 1)]


def noisy_mean(clipped_sum, key: jax.Array, step: jax.Array, std,
               expected_batch_size):
  """(S + N(0, std² I)) / B: step `step`'s noise, drawn once from
  fold_in(key, step), on the clipped sum; B the expected batch size.

  The one place noise meets a gradient: the noise links below and the
  tuner's compiled trial step (whose std and B are traced) all call it.
  """
  drawn = gaussian_like(clipped_sum, jax.random.fold_in(key, step), std)
  return jax.tree_util.tree_map(lambda s, z: (s + z) / expected_batch_size,
                                clipped_sum, drawn)


def add_noise_and_normalize(noise_std: float, expected_batch_size: float,
                            key: jax.Array,
                            step_factors: Optional[np.ndarray] = None
                            ) -> optax.GradientTransformation:
  """Adds N(0, noise_std²) to a clipped sum, then divides by the expected size.

  Args:
    noise_std: σ·C, the standard deviation of the noise on the *sum*. 0 gives
      the non-private (clipped) mean.
    expected_batch_size: q·N, public. Never the realised batch size.
    key: PRNG key of the noise stream.
    step_factors: [num_steps] multipliers f(t) of a noise schedule; step t's
      std is noise_std · f(t). None: noise_std at every step.

  Returns:
    An optax GradientTransformation whose input is the clipped sum.
  """
  if noise_std < 0:
    raise ValueError(f'noise_std must be >= 0, got {noise_std}')
  if expected_batch_size <= 0:
    raise ValueError(
        f'expected_batch_size must be > 0, got {expected_batch_size}')
  stds = round_up_f32(noise_std * (np.ones(1) if step_factors is None else
                                   np.asarray(step_factors, np.float64)))

  def init_fn(params):
    del params
    # A fresh buffer each time: a jitted step that donates its state would
    # otherwise delete the key held by this closure.
    return NoiseState(step=jnp.zeros([], jnp.int32), key=jnp.copy(key))

  def update_fn(clipped_sum, state, params=None):
    del params
    if noise_std > 0:
      mean = noisy_mean(clipped_sum, state.key, state.step,
                        value_at(stds, state.step), expected_batch_size)
    else:
      mean = jax.tree_util.tree_map(lambda s: s / expected_batch_size,
                                    clipped_sum)
    return mean, NoiseState(step=state.step + 1, key=state.key)

  return optax.GradientTransformation(init_fn, update_fn)


def std_for_float32_clip(noise_std: float, clip_norm: float) -> float:
  """σ·C for a clipping that runs with C in float32, which may round C up:
  the noise follows the larger of the two (the drawn std is then rounded
  up to float32 by `add_noise_and_normalize` or `round_up_f32`)."""
  if not math.isfinite(clip_norm):
    return noise_std
  return noise_std * max(1.0, float(np.float32(clip_norm)) / clip_norm)


def sampled_gaussian_pieces(mechanism, schedule: schedules.NoiseSchedule
                            ) -> list:
  """[(count, one step's DpEvent)]: the sampler's event around a Gaussian
  of multiplier σ·f / (sensitivity / C) on each piece of `schedule`."""
  out = []
  for _, count, factor in schedule.pieces(mechanism.num_steps):
    # σ·C·f over the sensitivity (C or 2C): the multiplier the accountant
    # sees.
    event_sigma = (mechanism.noise_std * factor / mechanism.sensitivity
                   if mechanism.is_private else 0.0)
    out.append((count, mechanism.sampler.step_event(
        dp_accounting.GaussianDpEvent(event_sigma))))
  return out


class ConstantClipLink:
  """The part of a link that neither owns C nor takes step inputs."""

  def clip_norm(self, opt_state) -> None:
    del opt_state  # The mechanism's constant C.

  def step_inputs(self, mask, stats) -> dict:
    del mask, stats
    return {}


@dataclasses.dataclass(frozen=True)
class GaussianLink(ConstantClipLink):
  """N(0, σ_t²C²) on the clipped sum once per step (`dp.noise_mechanism=
  'gaussian'`), σ_t = σ·f(t) on a noise schedule."""

  schedule: schedules.NoiseSchedule = schedules.NoiseSchedule()
  name = 'gaussian'
  state_type = NoiseState
  # The config field behind each key of settings().
  FIELDS = {'noise_mechanism': 'dp.noise_mechanism',
            'noise_schedule': 'dp.noise_schedule'}

  @classmethod
  def from_config(cls, dp, expected_batch_size: float,
                  num_steps: int) -> 'GaussianLink':
    del expected_batch_size, num_steps
    return cls(schedules.from_config(dp))

  def check(self, mechanism) -> None:
    del mechanism  # Nothing beyond what build_mechanism checks.

  def pieces(self, mechanism) -> list:
    return sampled_gaussian_pieces(mechanism, self.schedule)

  def releases(self, mechanism) -> list:
    first = self.schedule.pieces(mechanism.num_steps)[0][2]
    return [('clipped_sum', mechanism.noise_std * first,
             mechanism.sensitivity)]

  def transform(self, mechanism, key: jax.Array):
    factors = (None if self.schedule.is_constant
               else self.schedule.step_factors(mechanism.num_steps))
    return add_noise_and_normalize(
        std_for_float32_clip(mechanism.noise_std, mechanism.clip_norm),
        mechanism.expected_batch_size, key, factors)

  def settings(self) -> dict:
    return {'noise_mechanism': self.name,
            'noise_schedule': self.schedule.to_json()}

  def summary(self) -> dict:
    # results.json has always carried both keys.
    return {'noise_schedule': self.schedule.to_json(),
            'adaptive_clipping': None}

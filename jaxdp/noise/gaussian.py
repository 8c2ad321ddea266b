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

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax


class NoiseState(NamedTuple):
  step: jax.Array  # int32 scalar: logical steps privatised so far.
  key: jax.Array  # typed PRNG key; the step's noise uses fold_in(key, step).


class AdaptiveNoiseState(NamedTuple):
  """The state of `jaxdp.noise.adaptive`'s noise link."""

  step: jax.Array  # As NoiseState.
  key: jax.Array
  clip_norm: jax.Array  # float32: C_t, the clip norm of the next step.


_NOISE_STATES = (NoiseState, AdaptiveNoiseState)


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


def with_noise_step(opt_state, step):
  """`opt_state` with every NoiseState's counter set to `step`.

  After a rollback the parameters and optimizer state go back to a checkpoint,
  but the noise counter must not: the steps undone were executed, and drawing
  their noise again for different parameters would release the difference of
  two gradients without noise.
  """
  return _replace_in_noise_states(opt_state,
                                  step=jnp.asarray(step, jnp.int32))


def with_noise_key(opt_state, key: jax.Array):
  """`opt_state` with every NoiseState's key set to `key` (a new noise
  stream for the same compiled step, e.g. another seed of an audit)."""
  return _replace_in_noise_states(opt_state, key=key)


def _replace_in_noise_states(opt_state, **fields):
  return jax.tree_util.tree_map(
      lambda s: s._replace(**fields) if isinstance(s, _NOISE_STATES) else s,
      opt_state, is_leaf=lambda s: isinstance(s, _NOISE_STATES))


def noise_steps(opt_state) -> list:
  """The counters of the NoiseStates in `opt_state` (host ints)."""
  found = []
  jax.tree_util.tree_map(
      lambda s: found.append(int(s.step)) if isinstance(s, _NOISE_STATES)
      else s, opt_state, is_leaf=lambda s: isinstance(s, _NOISE_STATES))
  return found


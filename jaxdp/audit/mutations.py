"""Deliberately broken DP mechanisms, to show that an audit catches them.

Each mutation is a bug seen in real DP code. It is built here, from a
correct `DpMechanism`, and nowhere else: no config field reaches it, so a
training run cannot be mutated; only `experiments.audit --mutation=...` can.

* ``no_clipping``: per-example gradients are summed unclipped, while the
  noise and the claimed ε still assume the clipping norm C.
* ``noise_divided_by_batch``: noise of std σC/B is added to the clipped
  *sum* (noise calibrated for the mean, added before dividing): B times too
  little. The opposite mistake, σC added to the mean, over-noises; it is
  safe, and an audit must not flag it, so it is not a mutation here.
* ``reused_noise_key``: every step draws the same noise (the step is not
  folded into the key), so differences of two steps are noise-free.
* ``wrong_sampling_rate``: the accountant is told q / 10 while the sampler
  still includes each example with probability q, and σ is calibrated to the
  target ε under that wrong q.

Three more break correlated noise (dp.noise_mechanism banded_mf or blt) and
are refused for independent noise:

* ``wrong_strategy_inverse``: the streaming buffers keep the fresh draws z_t
  instead of the noise w_t (one variable mixed up), so the recursion filters
  z with the wrong inverse: the noise is (2I − C)·z, not C⁻¹·z. Its
  frequency response has a zero, so some combination of steps is released
  almost without noise.
* ``reused_buffer_draw``: step t's z is keyed by t mod b, the step's slot in
  the cycle of b groups, instead of by t: every draw is used again b steps
  later.
* ``sampler_ignores_cycle``: every step Poisson-samples all N examples at
  the group rate q' = B·b/N instead of one group, so an example can take
  part in consecutive steps and b times as often as the accountant assumes.
  (Plain Poisson sampling at q = B/N, the other way to ignore the cycle, is
  not clearly a leak: it is not a mutation here.)

The mechanism that runs is otherwise the real one: the same sampler, clipping
code, optax noise transformation and accountant.
"""

import dataclasses
import math

import dp_accounting
import jax
import numpy as np
import optax
from scipy import stats

from jaxdp import streams
from jaxdp import accounting
from jaxdp import noise
from jaxdp import sampling
from jaxdp.noise import correlated
from jaxdp.errors import ConfigError
from jaxdp.mechanism import DpMechanism

# Those that break correlated noise only (the others apply to every link).
CORRELATED_MUTATIONS = ('wrong_strategy_inverse', 'reused_buffer_draw',
                        'sampler_ignores_cycle')
MUTATIONS = ('none', 'no_clipping', 'noise_divided_by_batch',
             'reused_noise_key', 'wrong_sampling_rate') + CORRELATED_MUTATIONS

# wrong_sampling_rate: the accountant is told q / this.
UNDERSTATED_RATE_FACTOR = 10


class _UnderstatedRate(sampling.PoissonSampler):
  """A Poisson sampler whose DpEvent states q / factor; it samples with q.

  A subclass (not a wrapper) so that `sampling.reseeded` copies it whole.
  """

  def __init__(self, sampler: sampling.PoissonSampler, factor: float):
    self.__dict__.update(vars(sampler))
    self.factor = factor

  def step_event(self, gaussian: dp_accounting.DpEvent) -> dp_accounting.DpEvent:
    return dp_accounting.PoissonSampledDpEvent(
        self.sampling_probability / self.factor, gaussian)


class _CycleIgnored(sampling.CyclicPoissonSampler):
  """Claims the cycle (groups, events) but samples everyone at q'."""

  def __init__(self, sampler: sampling.CyclicPoissonSampler,
               overflow_probability: float = 1e-3):
    self.__dict__.update(vars(sampler))
    cap = int(stats.binom.isf(overflow_probability, self.num_examples,
                              self.group_sampling_probability))
    # A multiple of the claimed padding keeps its divisibility by devices.
    self.padded_size = sampler.padded_size * -(-max(cap, 1) //
                                               sampler.padded_size)

  def sample(self, step: int) -> sampling.Batch:
    rng = np.random.default_rng([self.seed, streams.SAMPLER_STREAM, int(step)])
    included = rng.random(self.num_examples) < self.group_sampling_probability
    return sampling.pad(np.flatnonzero(included), self.padded_size)


def _draws_repeat(transform: optax.GradientTransformation,
                  period: int) -> optax.GradientTransformation:
  """`transform` drawing step t's noise from the key of t mod `period` (1:
  the same draw every step). Its state's own counter still counts the
  steps; any buffers are updated as usual."""
  def update_fn(updates, state, params=None):
    pinned = state._replace(step=state.step % period)
    updates, after = transform.update(updates, pinned, params)
    return updates, after._replace(step=state.step + 1)
  return optax.GradientTransformation(transform.init, update_fn)


def _buffers_keep_draws(
    transform: optax.GradientTransformation) -> optax.GradientTransformation:
  """A correlated-noise `transform` whose buffers take in z_t, not w_t."""
  def update_fn(updates, state, params=None):
    z = correlated.draw(state, updates)
    updates, after = transform.update(updates, state, params)
    if isinstance(state, correlated.BltNoiseState):
      buffers = tuple(
          jax.tree_util.tree_map(
              lambda u, z_leaf, i=i: state.theta[i].astype(u.dtype) * u +
              z_leaf, u_tree, z)
          for i, u_tree in enumerate(state.buffers))
      return updates, after._replace(buffers=buffers)
    return updates, after._replace(recent=(z, *state.recent[:-1]))
  return optax.GradientTransformation(transform.init, update_fn)


@dataclasses.dataclass(frozen=True)
class MutatedMechanism(DpMechanism):
  """A DpMechanism with one of MUTATIONS applied ('none': unchanged)."""

  mutation: str = 'none'

  def clipped_grad_sum(self, batch_loss, clip_norm=None):
    if self.mutation == 'no_clipping':
      # The sum with C = ∞; noise and ε keep this mechanism's finite C.
      return dataclasses.replace(self, clip_norm=math.inf,
                                 mutation='none').clipped_grad_sum(batch_loss)
    return super().clipped_grad_sum(batch_loss, clip_norm)

  def noise_transform(self, seed: int):
    key = streams.noise_key(seed)
    if self.mutation == 'noise_divided_by_batch':
      if _is_correlated(self):
        return correlated.correlated_transform(
            self.link.strategy(),
            self.link.noise_std(self) / self.expected_batch_size,
            self.expected_batch_size, key)
      return noise.add_noise_and_normalize(
          self.noise_std / self.expected_batch_size, self.expected_batch_size,
          key)
    transform = super().noise_transform(seed)
    if self.mutation == 'reused_noise_key':
      return _draws_repeat(transform, 1)
    if self.mutation == 'reused_buffer_draw':
      return _draws_repeat(transform, self.link.bands)
    if self.mutation == 'wrong_strategy_inverse':
      return _buffers_keep_draws(transform)
    return transform


def _is_correlated(mechanism: DpMechanism) -> bool:
  return isinstance(mechanism.link, correlated.CORRELATED_LINKS)


def _check_correlated(mechanism: DpMechanism, mutation: str) -> None:
  if not _is_correlated(mechanism):
    raise ConfigError(
        '--mutation', f'{mutation} breaks correlated noise, but the '
        f'mechanism\'s noise is {mechanism.link.name}',
        'set --config.dp.noise_mechanism=banded_mf or blt, or use another '
        'mutation')
  if mutation == 'wrong_strategy_inverse' and not (
      mechanism.link.strategy().buffers):
    raise ConfigError('dp.mf_bands', 'one band keeps no buffers, so '
                      'wrong_strategy_inverse has nothing to break',
                      'set dp.mf_bands >= 2')


def mutate(mechanism: DpMechanism, mutation: str) -> MutatedMechanism:
  """`mechanism` with `mutation`; its claimed ε is `result.epsilon()`.

  For wrong_sampling_rate, σ is recalibrated to `mechanism.target_epsilon`
  under the understated q, as the buggy code would do.
  """
  if mutation not in MUTATIONS:
    raise ConfigError('--mutation', f'unknown mutation {mutation!r}',
                      f'use one of {", ".join(MUTATIONS)}')
  fields = {f.name: getattr(mechanism, f.name)
            for f in dataclasses.fields(DpMechanism)}
  mutated = MutatedMechanism(**fields, mutation=mutation)
  if mutation in CORRELATED_MUTATIONS:
    _check_correlated(mechanism, mutation)
  if mutation == 'sampler_ignores_cycle':
    return dataclasses.replace(mutated,
                               sampler=_CycleIgnored(mechanism.sampler))
  if mutation != 'wrong_sampling_rate':
    return mutated
  if mechanism.sampler.name != 'poisson' or mechanism.target_epsilon is None:
    raise ConfigError('--mutation', 'wrong_sampling_rate needs Poisson '
                      'sampling and a target ε to calibrate σ to',
                      'set dp.sampler=poisson and dp.target_epsilon')
  mutated = dataclasses.replace(
      mutated, sampler=_UnderstatedRate(mechanism.sampler,
                                        UNDERSTATED_RATE_FACTOR))
  try:
    sigma = accounting.calibrate_noise_multiplier(
        mechanism.accountant, mechanism.neighboring_relation,
        lambda s: dataclasses.replace(mutated, noise_multiplier=s).dp_event(),
        mechanism.target_epsilon, mechanism.delta)
  except Exception as e:  # dp-accounting raises several types here.
    raise ConfigError(
        'dp.target_epsilon', f'could not calibrate σ under the understated '
        f'q for ε={mechanism.target_epsilon} ({type(e).__name__}: {e})',
        'raise the target ε or train for fewer steps') from e
  return dataclasses.replace(mutated, noise_multiplier=sigma)

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

The mechanism that runs is otherwise the real one: the same sampler, clipping
code, optax noise transformation and accountant.
"""

import dataclasses
import math

import dp_accounting
import optax

from jaxdp import streams
from jaxdp import accounting
from jaxdp import noise
from jaxdp.errors import ConfigError
from jaxdp.mechanism import DpMechanism

MUTATIONS = ('none', 'no_clipping', 'noise_divided_by_batch',
             'reused_noise_key', 'wrong_sampling_rate')

# wrong_sampling_rate: the accountant is told q / this.
UNDERSTATED_RATE_FACTOR = 10


class _UnderstatedRate:
  """A Poisson sampler whose DpEvent states q / factor; it samples with q."""

  def __init__(self, sampler, factor: float):
    self._sampler = sampler
    self.factor = factor

  def __getattr__(self, name):  # Everything else is the real sampler's.
    return getattr(self._sampler, name)

  def step_event(self, gaussian: dp_accounting.DpEvent) -> dp_accounting.DpEvent:
    return dp_accounting.PoissonSampledDpEvent(
        self._sampler.sampling_probability / self.factor, gaussian)


def _same_noise_every_step(
    transform: optax.GradientTransformation) -> optax.GradientTransformation:
  """`transform` with its noise counter pinned at 0 for every draw (its
  state is one NoiseState, whose own counter still counts the steps)."""
  def update_fn(updates, state: noise.NoiseState, params=None):
    updates, _ = transform.update(updates, state._replace(step=0 * state.step),
                                  params)
    return updates, state._replace(step=state.step + 1)
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
    if self.mutation == 'noise_divided_by_batch':
      return noise.add_noise_and_normalize(
          self.noise_std / self.expected_batch_size, self.expected_batch_size,
          streams.noise_key(seed))
    transform = super().noise_transform(seed)
    if self.mutation == 'reused_noise_key':
      return _same_noise_every_step(transform)
    return transform


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

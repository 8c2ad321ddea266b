"""Batch samplers, each paired with the DpEvent that describes it exactly.

A sampler decides which examples enter each logical step, and so decides which
privacy analysis applies. Each sampler here therefore also builds the DpEvent
of one step and names the neighbouring relation of that event: the two cannot
be configured apart.

* ``poisson`` (default): every example enters each step independently with
  probability q = B / N, so the realised batch size is Binomial(N, q). Matches
  ``PoissonSampledDpEvent`` under add/remove-one neighbours.
* cyclic Poisson (chosen by the correlated-noise links, `jaxdp.noise.
  correlated`): each example is put once in one of b groups, uniformly and
  independently, and step t Poisson-samples group t mod b with probability
  q' = B·b / N, so each example takes part at most once in any b consecutive
  steps. Matches b-min-separated participation, and the amplified banded
  matrix-factorisation analysis (Choquette-Choo et al. 2023) with
  ``PoissonSampledDpEvent(q', ·)`` per participation. With b = 1 it draws
  exactly what ``poisson`` draws.
* ``fixed_size``: every step draws a fresh uniformly random subset of exactly B
  of the N examples, independently of earlier steps. Matches
  ``SampledWithoutReplacementDpEvent`` under replace-one neighbours (N is
  public), for which the clipped sum has sensitivity 2C, not C.

Epoch-style shuffling (a random permutation cut into batches) is *not* offered:
dp-accounting has no event for it, and accounting it as Poisson sampling
understates ε (Chua et al. 2024).

Static shapes. XLA compiles one program per batch shape, so sampled indices are
padded to `padded_size` with masked-out slots. For Poisson sampling the padded
size is the smallest multiple of the microbatch size that the Binomial(N, q)
batch size exceeds with probability at most `overflow_probability`. A batch that
does overflow is *not* truncated (truncation would change the mechanism): it is
padded to the next multiple of the padded size and processed whole; that shape
compiles once more. The guarantee is therefore exact whatever the cap.

Randomness is drawn on the host with NumPy from (seed, step), so a step's batch
does not depend on how many steps ran before it in this process: a resumed run
draws the same batches.
"""

import copy
import dataclasses
import functools
import math

import dp_accounting
import numpy as np
from scipy import stats

from jaxdp import streams
from jaxdp.errors import ConfigError

SAMPLERS = ('poisson', 'fixed_size')



@dataclasses.dataclass(frozen=True)
class Batch:
  """Indices of one logical batch, padded to a static size."""

  indices: np.ndarray  # int64 [padded]; padding slots hold 0.
  mask: np.ndarray  # bool [padded]; True for real examples.

  @property
  def size(self) -> int:
    return int(self.mask.sum())


def _round_up(value: int, multiple: int) -> int:
  return int(math.ceil(value / multiple) * multiple)


def pad(indices: np.ndarray, padded_size: int) -> Batch:
  """Pads `indices` to a multiple of `padded_size`, never dropping any."""
  target = max(padded_size, _round_up(len(indices), padded_size))
  padded = np.zeros(target, dtype=np.int64)
  padded[: len(indices)] = indices
  mask = np.zeros(target, dtype=bool)
  mask[: len(indices)] = True
  return Batch(padded, mask)


class PoissonSampler:
  """Includes each example independently with probability q at every step."""

  name = 'poisson'
  neighboring_relation = dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE

  def __init__(self, num_examples: int, expected_batch_size: float, seed: int,
               multiple_of: int = 1, overflow_probability: float = 1e-3):
    self.num_examples = int(num_examples)
    self.expected_batch_size = float(expected_batch_size)
    self.sampling_probability = self.expected_batch_size / self.num_examples
    self.seed = int(seed)
    if not 0 < overflow_probability <= 0.5:
      raise ConfigError(
          'perf.batch_overflow_probability',
          f'must be in (0, 0.5], got {overflow_probability}',
          'use a small probability such as 1e-3 (smaller pads more)')
    # isf(p) is the smallest k with P(batch size > k) <= p.
    cap = int(stats.binom.isf(overflow_probability, self.num_examples,
                              self.sampling_probability))
    self.padded_size = _round_up(max(cap, 1), multiple_of)

  def sample(self, step: int) -> Batch:
    rng = np.random.default_rng([self.seed, streams.SAMPLER_STREAM, int(step)])
    included = rng.random(self.num_examples) < self.sampling_probability
    return pad(np.flatnonzero(included), self.padded_size)

  def step_event(self, gaussian: dp_accounting.DpEvent) -> dp_accounting.DpEvent:
    return dp_accounting.PoissonSampledDpEvent(self.sampling_probability,
                                               gaussian)


@functools.lru_cache(maxsize=8)
def _cyclic_groups(num_examples: int, groups: int, seed: int) -> tuple:
  """Each group's example indices (sorted): every example in a uniformly
  random group, independently of the others.

  Independent draws, as for Poisson sampling: adding an example (index N)
  leaves every other example's group and draws unchanged, which is the
  coupling the add/remove analysis of a fixed partition needs. (A balanced
  partition, a permutation mod b, would reassign every example when N
  changes.)
  """
  if groups == 1:
    return (np.arange(num_examples),)
  rng = np.random.default_rng([seed, streams.CYCLE_STREAM])
  assignment = np.minimum((rng.random(num_examples) * groups).astype(int),
                          groups - 1)
  return tuple(np.flatnonzero(assignment == g) for g in range(groups))


class CyclicPoissonSampler:
  """Step t Poisson-samples the t mod b-th of b fixed groups of examples."""

  name = 'cyclic_poisson'
  neighboring_relation = dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE

  def __init__(self, num_examples: int, expected_batch_size: float,
               groups: int, seed: int, multiple_of: int = 1,
               overflow_probability: float = 1e-3):
    self.num_examples = int(num_examples)
    self.expected_batch_size = float(expected_batch_size)
    # The fraction of all examples a step uses (epochs count in these).
    self.sampling_probability = self.expected_batch_size / self.num_examples
    self.groups = int(groups)
    self.seed = int(seed)
    # Within its group, an example enters its group's steps with q'.
    self.group_sampling_probability = (self.sampling_probability *
                                       self.groups)
    if not 0 < self.group_sampling_probability <= 1:
      raise ConfigError(
          'dp.mf_bands',
          f'{self.groups} groups of ~{self.num_examples // self.groups} '
          f'examples each cannot give batches of {self.expected_batch_size:g} '
          f'(q\' = B·b/N = {self.group_sampling_probability:.3g} > 1)',
          f'use dp.mf_bands ≤ N/B = '
          f'{int(self.num_examples // self.expected_batch_size)}, or a '
          'smaller dp.batch_size')
    if not 0 < overflow_probability <= 0.5:
      raise ConfigError(
          'perf.batch_overflow_probability',
          f'must be in (0, 0.5], got {overflow_probability}',
          'use a small probability such as 1e-3 (smaller pads more)')
    largest = max(len(self.group(g)) for g in range(self.groups))
    cap = int(stats.binom.isf(overflow_probability, largest,
                              self.group_sampling_probability))
    self.padded_size = _round_up(max(cap, 1), multiple_of)

  def assignment(self) -> np.ndarray:
    """[N]: each example's group (it may take part in steps ≡ it mod b)."""
    out = np.zeros(self.num_examples, int)
    for g, members in enumerate(_cyclic_groups(self.num_examples, self.groups,
                                               self.seed)):
      out[members] = g
    return out

  def group(self, step: int) -> np.ndarray:
    """The examples step `step` may use (sorted)."""
    return _cyclic_groups(self.num_examples, self.groups,
                          self.seed)[int(step) % self.groups]

  def sample(self, step: int) -> Batch:
    members = self.group(step)
    rng = np.random.default_rng([self.seed, streams.SAMPLER_STREAM, int(step)])
    included = rng.random(len(members)) < self.group_sampling_probability
    return pad(members[included], self.padded_size)

  def step_event(self, gaussian: dp_accounting.DpEvent) -> dp_accounting.DpEvent:
    """One participation's event (the link wraps it in its cycle)."""
    return dp_accounting.PoissonSampledDpEvent(
        self.group_sampling_probability, gaussian)


class FixedSizeSampler:
  """Draws a fresh uniform subset of exactly B examples at every step."""

  name = 'fixed_size'
  neighboring_relation = dp_accounting.NeighboringRelation.REPLACE_ONE

  def __init__(self, num_examples: int, batch_size: int, seed: int,
               multiple_of: int = 1):
    if batch_size != int(batch_size):
      raise ConfigError('dp.batch_size',
                        f'{batch_size} is not a whole number',
                        'the fixed_size sampler needs an integer batch size')
    self.num_examples = int(num_examples)
    self.expected_batch_size = float(batch_size)
    self.sampling_probability = self.expected_batch_size / self.num_examples
    self.seed = int(seed)
    self.padded_size = _round_up(int(batch_size), multiple_of)

  def sample(self, step: int) -> Batch:
    rng = np.random.default_rng([self.seed, streams.SAMPLER_STREAM, int(step)])
    chosen = rng.choice(self.num_examples, int(self.expected_batch_size),
                        replace=False, shuffle=False)
    return pad(np.sort(chosen), self.padded_size)

  def step_event(self, gaussian: dp_accounting.DpEvent) -> dp_accounting.DpEvent:
    return dp_accounting.SampledWithoutReplacementDpEvent(
        self.num_examples, int(self.expected_batch_size), gaussian)


def reseeded(sampler, seed: int):
  """`sampler` drawing from another seed: the same q, relation, padding
  and event (an audit's runs, each with its own draws)."""
  if not (isinstance(seed, int) and seed >= 0):
    raise ConfigError('seed', f'must be an integer >= 0, got {seed!r}',
                      'set seed to a non-negative integer')
  out = copy.copy(sampler)
  out.seed = int(seed)
  return out


def check_inputs(num_examples: int, batch_size: float, seed: int) -> None:
  """ConfigError for a seed or batch size no sampler can use."""
  if not (isinstance(seed, int) and seed >= 0):
    raise ConfigError('seed', f'must be an integer >= 0, got {seed!r}',
                      'set seed to a non-negative integer')
  if not 0 < batch_size <= num_examples:
    raise ConfigError(
        'dp.batch_size',
        f'expected batch size {batch_size} is not in (0, N={num_examples}]',
        'choose a batch size between 1 and the number of training examples')


def make_sampler(name: str, num_examples: int, batch_size: float, seed: int,
                 multiple_of: int = 1, overflow_probability: float = 1e-3):
  """The sampler called `name` (one of SAMPLERS)."""
  check_inputs(num_examples, batch_size, seed)
  if name == 'poisson':
    return PoissonSampler(num_examples, batch_size, seed, multiple_of,
                          overflow_probability)
  if name == 'fixed_size':
    return FixedSizeSampler(num_examples, batch_size, seed, multiple_of)
  if name in ('shuffle', 'shuffled', 'epoch_shuffle'):
    raise ConfigError(
        'dp.sampler',
        'epoch-shuffled batches have no matching event in dp-accounting, and '
        'accounting them as Poisson sampling understates ε',
        'use dp.sampler=poisson (default) or dp.sampler=fixed_size (a fresh '
        'random subset of exactly dp.batch_size examples every step)')
  raise ConfigError('dp.sampler', f'unknown sampler {name!r}',
                    f'use one of {", ".join(SAMPLERS)}')

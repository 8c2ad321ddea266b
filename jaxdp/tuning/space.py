"""The search space: a few values per hyperparameter, and how to walk it.

σ is never searched: each trial's σ is calibrated so that the trial spends
its share of the budget (`tuning.privacy`). Only the batch size and the
number of epochs change what a trial spends; the learning rate and the clip
norm do not (σ multiplies C).
"""

import dataclasses
import itertools
import math

import numpy as np

from jaxdp.errors import ConfigError

# Searched hyperparameters, in the order their bits are laid out for QIEA.
NAMES = ('learning_rate', 'clip_norm', 'batch_size', 'epochs')


@dataclasses.dataclass(frozen=True)
class SearchSpace:
  """Candidate values of each hyperparameter (each a non-empty tuple)."""

  learning_rate: tuple = (0.03, 0.1, 0.3, 1.0, 3.0)
  clip_norm: tuple = (0.1, 0.3, 1.0, 3.0)
  batch_size: tuple = (64, 128, 256, 512)
  epochs: tuple = (5.0, 10.0, 20.0, 40.0)

  def __post_init__(self):
    for name in NAMES:
      values = getattr(self, name)
      if not values or not all(v > 0 for v in values):
        raise ConfigError(f'--{name}',
                          f'needs positive values, got {values!r}',
                          'give at least one positive value')

  def sizes(self) -> tuple:
    return tuple(len(getattr(self, name)) for name in NAMES)

  def candidate(self, indices) -> dict:
    """{name: value} for one index per hyperparameter."""
    return {name: getattr(self, name)[int(i)]
            for name, i in zip(NAMES, indices)}

  def privacy_shapes(self) -> list:
    """Every (batch_size, epochs) pair: what decides a trial's spending."""
    return list(itertools.product(self.batch_size, self.epochs))

  def random_indices(self, rng: np.random.Generator) -> tuple:
    """A candidate drawn uniformly (independent of the data)."""
    return tuple(int(rng.integers(n)) for n in self.sizes())

  # QIEA: each hyperparameter's index in ceil(log2 n) bits (big-endian);
  # a code past the last value maps to the last one.
  def bits_per_name(self) -> tuple:
    return tuple(max(1, math.ceil(math.log2(n))) if n > 1 else 0
                 for n in self.sizes())

  @property
  def num_bits(self) -> int:
    return sum(self.bits_per_name())

  def decode(self, bits) -> tuple:
    """Indices from one QIEA bitstring."""
    out, at = [], 0
    for n, width in zip(self.sizes(), self.bits_per_name()):
      code = 0
      for b in bits[at:at + width]:
        code = 2 * code + int(b)
      out.append(min(code, n - 1))
      at += width
    return tuple(out)

  def grid(self, trials: int) -> list:
    """A coarse grid of at most `trials` points, evenly spaced per name.

    Per-name counts double in turn (learning rate first) while the product
    stays within `trials`: the naive baseline a practitioner would run.
    """
    counts = [1] * len(NAMES)
    grown = True
    while grown:
      grown = False
      for d, n in enumerate(self.sizes()):
        bigger = min(2 * counts[d], n)
        if bigger > counts[d] and (math.prod(counts) // counts[d] * bigger
                                   <= trials):
          counts[d], grown = bigger, True
    # k points at the centres of k equal slices of the sorted values: a
    # grid of 2 takes the two inner quartiles, not the extremes.
    axes = [np.unique(((np.arange(k) + 0.5) * n / k).astype(int))
            for n, k in zip(self.sizes(), counts)]
    return [tuple(int(i) for i in point)
            for point in itertools.product(*axes)]

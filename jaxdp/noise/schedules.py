"""Noise-multiplier schedules: σ_t = σ · f(t), piecewise constant.

A schedule changes the noise multiplier over the run by a fixed shape f with
f(0) = 1; the one scale σ is then calibrated so that the *whole* schedule
meets the target ε (`mechanism.build_mechanism`). Each shape is cut into
`segments` pieces of (nearly) equal length, constant within a piece, so the
run is accounted exactly as the composition of a few self-composed steps:

    constant      f = 1
    linear        f(u) = 1 + (r − 1) u
    exponential   f(u) = r^u
    cosine        f(u) = r + (1 − r)(1 + cos πu) / 2
    step          f = 1 on the first half of the pieces, r on the rest: one
                  drop, halfway (the noise analogue of a step decay of the
                  learning rate)

where u ∈ [0, 1] is the position of the piece (its first step is u = 0 and the
last piece's is u = 1, so the last piece has f = r exactly) and r =
`final_ratio` = σ_last / σ_first. r < 1 decays the noise (more noise early,
less late; Yu et al. 2019 argue for decaying noise), r > 1 grows it.
"""

import dataclasses
import math

import numpy as np

from jaxdp.errors import ConfigError

SHAPES = ('constant', 'linear', 'exponential', 'cosine', 'step')

# More pieces make ledgers and PLD accounting longer; 1,000 distinct steps
# take dp-accounting minutes. Per-step schedules are for the host-side
# analysis (jaxdp.accounting.sampled_gaussian_rdp), not for training runs.
MAX_SEGMENTS = 100



@dataclasses.dataclass(frozen=True)
class NoiseSchedule:
  """The shape of σ over a run (the scale is calibrated separately)."""

  shape: str = 'constant'
  final_ratio: float = 1.0  # r = σ of the last piece / σ of the first.
  segments: int = 10

  @property
  def is_constant(self) -> bool:
    return self.shape == 'constant' or self.final_ratio == 1.0

  def piece_factors(self) -> np.ndarray:
    """f on each piece, [segments] (one piece for a constant schedule)."""
    if self.is_constant:
      return np.ones(1)
    u = np.linspace(0.0, 1.0, self.segments)
    r = self.final_ratio
    if self.shape == 'linear':
      return 1.0 + (r - 1.0) * u
    if self.shape == 'exponential':
      return r ** u
    if self.shape == 'step':
      return np.where(np.arange(self.segments) < self.segments / 2, 1.0, r)
    return r + (1.0 - r) * (1.0 + np.cos(math.pi * u)) / 2.0  # cosine

  def pieces(self, num_steps: int) -> list:
    """[(first step, count, f)] covering steps 0 .. num_steps − 1."""
    factors = self.piece_factors()
    k = min(len(factors), num_steps)
    bounds = np.linspace(0, num_steps, k + 1).round().astype(int)
    if k < len(factors):  # Fewer steps than pieces: one step each.
      factors = factors[np.linspace(0, len(factors) - 1, k).round().astype(int)]
    return [(int(a), int(b - a), float(f))
            for a, b, f in zip(bounds[:-1], bounds[1:], factors)]

  def step_factors(self, num_steps: int) -> np.ndarray:
    """f for every step, [num_steps] float64 (the accountant's values)."""
    out = np.empty(num_steps, np.float64)
    for first, count, factor in self.pieces(num_steps):
      out[first:first + count] = factor
    return out

  def to_json(self) -> dict:
    return dataclasses.asdict(self)


def from_config(dp) -> NoiseSchedule:
  """The schedule of `config.dp`, with errors naming the field."""
  if dp.noise_schedule not in SHAPES:
    raise ConfigError('dp.noise_schedule',
                      f'unknown schedule {dp.noise_schedule!r}',
                      f'use one of {", ".join(SHAPES)}')
  r = dp.noise_schedule_final_ratio
  if not (r > 0 and math.isfinite(r)):
    raise ConfigError('dp.noise_schedule_final_ratio',
                      f'must be a finite number > 0, got {r}',
                      'use e.g. 0.5 to halve σ over the run')
  k = dp.noise_schedule_segments
  if not (isinstance(k, int) and 2 <= k <= MAX_SEGMENTS):
    raise ConfigError('dp.noise_schedule_segments',
                      f'must be an integer in [2, {MAX_SEGMENTS}], got {k}',
                      'use e.g. 10 pieces')
  if dp.noise_schedule == 'constant' and r != 1.0:
    raise ConfigError('dp.noise_schedule_final_ratio',
                      f'is {r}, but dp.noise_schedule is constant',
                      'choose a shape (linear, exponential, cosine, step) '
                      'or leave the ratio at 1')
  return NoiseSchedule(dp.noise_schedule, float(r), int(k))

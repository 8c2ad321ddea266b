"""Means with Student-t confidence intervals, for benchmark tables."""

import math
import statistics

from scipy import stats


def mean_interval(values, confidence: float = 0.95) -> tuple:
  """(mean, half-width of the Student-t interval) of `values`; the width is
  None for fewer than two values (and the mean too, for none)."""
  values = [v for v in values if v is not None]
  if not values:
    return None, None
  mean = statistics.fmean(values)
  if len(values) < 2:
    return mean, None
  t = stats.t.ppf((1 + confidence) / 2, len(values) - 1)
  return mean, t * statistics.stdev(values) / math.sqrt(len(values))


def format_interval(mean: float, half, digits: int = 3,
                    sign: bool = False) -> str:
  """'mean ± half' ('mean' alone without a width, '—' without values)."""
  if mean is None:
    return '—'
  text = f'{mean:+.{digits}f}' if sign else f'{mean:.{digits}f}'
  return text if half is None else f'{text} ± {half:.{digits}f}'

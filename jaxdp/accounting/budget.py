"""Budget enforcement: how many more steps a run may execute within its ε.

The training loop asks `Budget.allows(executed)` before every step. A step is
executed only if ε of *all* executions so far plus this one stays within the
target, so a run can never overspend, whatever rollbacks, resumes or extensions
happened before. Steps undone by a rollback stay in the history: their
privatised gradients were computed and acted on.

ε(history + k steps) grows with k, so the last affordable step is found by a
galloping search (a few accountant calls), once per (history, target); the
loop then compares integers.
"""

import math
from typing import Callable, Optional


def last_step_within(epsilon_after: Callable[[int], float], target: float,
                     guess: int, cap: int) -> int:
  """The largest k in [0, cap] with epsilon_after(k) ≤ target (-1 if none).

  `epsilon_after` must be non-decreasing. `guess` is where the search starts
  (the planned number of steps, usually right at the answer).
  """
  if epsilon_after(0) > target:
    return -1
  if cap <= 0:
    return 0
  k = max(1, min(guess, cap))
  if epsilon_after(k) <= target:
    if epsilon_after(cap) <= target:  # Common for generous targets: 2 calls.
      return cap
    low, stride = k, 1  # epsilon_after(low) <= target is known.
    while True:  # Gallop up until a k over budget; the cap is one.
      k = min(cap, low + stride)
      if epsilon_after(k) > target:
        high = k
        break
      low, stride = k, 2 * stride
  else:
    low, high = 0, k
  while high - low > 1:  # Invariant: ok(low), not ok(high).
    mid = (low + high) // 2
    if epsilon_after(mid) <= target:
      low = mid
    else:
      high = mid
  return low


class Budget:
  """The affordable executions of one run.

  Args:
    epsilon_of: ε after n executions in total (non-decreasing in n); it
      includes whatever the run executed before a resume or rollback.
    target_epsilon: the run's ε budget; None means no budget (ε is reported).
    planned: the executions the run plans to reach (where the search starts).
    cap: never search beyond this many executions.
  """

  def __init__(self, epsilon_of: Callable[[int], float],
               target_epsilon: Optional[float], planned: int, cap: int):
    self.target_epsilon = target_epsilon
    self._epsilon_of = epsilon_of
    if target_epsilon is None:
      self.last_affordable = math.inf
    else:
      # -1 if nothing is affordable: ε(0) > target, possible only when a
      # release before step 1 alone exceeds a target lowered on resume.
      self.last_affordable = last_step_within(epsilon_of, target_epsilon,
                                              planned, cap)

  def allows(self, executed: int) -> bool:
    """Whether one more step after `executed` executions stays in budget."""
    return executed + 1 <= self.last_affordable

  def remaining(self, executed: int) -> Optional[float]:
    """target ε − ε after `executed` executions (None: no budget)."""
    if self.target_epsilon is None:
      return None
    return self.target_epsilon - self._epsilon_of(executed)

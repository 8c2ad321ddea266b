"""Budget enforcement: a run never executes a step its target cannot afford."""

import math
import random

import pytest

from jaxdp.accounting import budget
from jaxdp import mechanism as mechanism_lib
from jaxdp import sampling
from configs import base


def _simulate(plan: budget.Budget, planned: int, rollbacks, rng) -> int:
  """Runs the training loop's control flow; returns the executions."""
  executed = step = 0
  while step < planned:
    if not plan.allows(executed):
      break
    executed += 1
    step += 1
    if rollbacks and rng.random() < 0.05:  # Divergence: undo some steps.
      step = max(0, step - rng.randint(1, 10))
      rollbacks -= 1
  return executed


def test_last_step_within_matches_brute_force_on_monotone_curves():
  rng = random.Random(0)
  for _ in range(500):
    jumps = [rng.random() for _ in range(200)]
    curve = [0.0]
    for j in jumps:
      curve.append(curve[-1] + (j if rng.random() < 0.7 else 0.0))
    target = rng.uniform(0, curve[-1] * 1.2)
    cap = rng.randint(0, 200)
    guess = rng.randint(0, 250)
    expected = max(k for k in range(cap + 1) if curve[k] <= target)
    assert budget.last_step_within(lambda k: curve[k], target, guess,
                                   cap) == expected


def _random_mechanism(rng):
  config = base.get_config()
  n = rng.choice([500, 5_000, 60_000])
  config.dp.batch_size = rng.choice([16, 64, 256, 500])
  config.dp.noise_multiplier = rng.uniform(0.9, 3.0)
  config.dp.target_epsilon = None
  config.dp.accountant = rng.choice(['rdp', 'rdp_classic'])
  config.dp.sampler = rng.choice(sampling.SAMPLERS)
  config.dp.delta = 1e-5 if n > 1000 else 1e-4
  return mechanism_lib.build_mechanism(
      config.dp, config.perf, n, rng.randint(1, 2000), None, 0)


def test_random_configs_with_rollbacks_and_extensions_never_overspend():
  rng = random.Random(1)
  for _ in range(12):
    mechanism = _random_mechanism(rng)
    planned = mechanism.num_steps
    target = rng.uniform(0.3, 1.2) * mechanism.epsilon()
    cache = {}

    def epsilon_of(k):
      if k not in cache:
        cache[k] = mechanism.epsilon(k)
      return cache[k]

    plan = budget.Budget(epsilon_of, target, planned=planned,
                         cap=planned * 5)
    executed = _simulate(plan, planned, rollbacks=rng.randint(0, 3), rng=rng)
    assert epsilon_of(executed) <= target
    if executed < planned:  # Stopped by the budget: nothing affordable left.
      assert epsilon_of(executed + 1) > target
    # Extending the run (more planned steps) from where it stopped.
    more = budget.Budget(epsilon_of, target, planned=2 * planned,
                         cap=planned * 5)
    assert not more.allows(plan.last_affordable)
    assert more.last_affordable == plan.last_affordable or (
        plan.last_affordable == planned * 5)
    assert more.remaining(executed) == pytest.approx(target
                                                     - epsilon_of(executed))


def test_no_target_means_no_limit():
  plan = budget.Budget(lambda k: float(k), None, planned=10, cap=10)
  assert plan.allows(10**9) and plan.remaining(5) is None
  assert math.isinf(plan.last_affordable)

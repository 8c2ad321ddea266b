"""Noise-multiplier schedules: their shapes, accounting, calibration, noise."""

import math

import dp_accounting
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import base
from jaxdp import accounting
from jaxdp.train import ledger as ledger_lib
from jaxdp import noise
from jaxdp.errors import ConfigError
from jaxdp.mechanism import build_mechanism
from jaxdp.noise.schedules import NoiseSchedule
from jaxdp.noise.schedules import SHAPES
from jaxdp.train import train_and_evaluate
from test_noise import variance_p_value

_QUIET = lambda line: None


@pytest.mark.parametrize('shape', SHAPES[1:])
def test_every_shape_runs_from_one_to_the_final_ratio(shape):
  for ratio in (0.3, 2.0):
    schedule = NoiseSchedule(shape, ratio, segments=7)
    factors = schedule.piece_factors()
    assert factors[0] == pytest.approx(1.0)
    assert factors[-1] == pytest.approx(ratio)
    steps = np.diff(factors) * np.sign(1 - ratio)  # > 0: toward the ratio.
    if shape == 'step':  # One drop, halfway.
      assert np.all(steps <= 0) and np.count_nonzero(steps) == 1
      assert steps[3] < 0
    else:
      assert np.all(steps < 0)
    for num_steps in (3, 7, 100, 1001):  # Fewer steps than pieces, and more.
      pieces = schedule.pieces(num_steps)
      assert sum(count for _, count, _ in pieces) == num_steps
      assert [first for first, _, _ in pieces] == list(
          np.cumsum([0] + [c for _, c, _ in pieces[:-1]]))
      per_step = schedule.step_factors(num_steps)
      assert per_step[0] == pytest.approx(1.0)
      assert per_step[-1] == pytest.approx(ratio)


def _mechanism(shape='cosine', ratio=0.5, accountant='rdp', sigma=None,
               steps=300, target=3.0):
  config = base.get_config()
  config.dp.noise_schedule = shape
  config.dp.noise_schedule_final_ratio = ratio if shape != 'constant' else 1.0
  config.dp.noise_schedule_segments = 5
  config.dp.accountant = accountant
  config.dp.noise_multiplier = sigma
  config.dp.target_epsilon = target
  return build_mechanism(config.dp, config.perf, 1437, steps, None, 0)


def test_a_schedule_is_accounted_as_its_pieces_composed():
  m = _mechanism(sigma=1.2, target=None)
  pieces = m.link.schedule.pieces(m.num_steps)
  events = [dp_accounting.SelfComposedDpEvent(
      dp_accounting.PoissonSampledDpEvent(
          m.sampling_probability, dp_accounting.GaussianDpEvent(1.2 * f)),
      count) for _, count, f in pieces]
  direct = accounting.epsilon('rdp', m.neighboring_relation,
                              dp_accounting.ComposedDpEvent(events), m.delta)
  assert m.epsilon() == pytest.approx(direct, rel=1e-12)
  # Part-way: the first k steps only, across a piece boundary.
  k = pieces[1][0] + 3
  first_k = events[:1] + [dp_accounting.SelfComposedDpEvent(
      events[1].event, 3)]
  assert m.epsilon(k) == pytest.approx(accounting.epsilon(
      'rdp', m.neighboring_relation, dp_accounting.ComposedDpEvent(first_k),
      m.delta), rel=1e-12)
  # Decaying noise spends faster late: ε of the last half > the first half.
  assert m.epsilon(300) - m.epsilon(150) > m.epsilon(150)


@pytest.mark.slow  # 10 s with rdp, 17 s with pld.
@pytest.mark.parametrize('accountant', ['rdp', 'pld'])
def test_one_scale_calibrates_the_whole_schedule_to_the_target(accountant):
  m = _mechanism(accountant=accountant, steps=200)
  assert m.epsilon() <= 3.0
  lower = _mechanism(accountant=accountant, steps=200,
                     sigma=m.noise_multiplier * (1 - 5e-3), target=None)
  assert lower.epsilon() > 3.0  # σ is the smallest scale that meets it.
  # σ ends at half its start, so it must start above the constant σ that
  # meets the target.
  constant = _mechanism('constant', accountant=accountant, steps=200,
                        sigma=m.noise_multiplier, target=None)
  assert constant.epsilon() < 3.0


def test_the_noise_of_step_t_has_std_sigma_c_times_f_t():
  factors = NoiseSchedule('linear', 0.25, segments=4).step_factors(8)
  tx = noise.add_noise_and_normalize(2.0, 1.0, jax.random.key(3), factors)
  zeros = {'w': jnp.zeros((50_000,), jnp.float32)}
  state = tx.init(zeros)
  for t in range(8):
    out, state = tx.update(zeros, state)
    sample = np.asarray(out['w'])
    assert variance_p_value(sample, 2.0 * factors[t]) > 1e-3
    assert variance_p_value(sample, 2.0 * factors[t] * 1.05) < 1e-6


def test_a_scheduled_run_trains_and_its_ledger_verifies(small_config,
                                                        tmp_path):
  small_config.dp.noise_schedule = 'linear'
  small_config.dp.noise_schedule_final_ratio = 0.5
  small_config.dp.noise_schedule_segments = 3
  small_config.train.num_steps = 12
  small_config.checkpoint.every_steps = 3  # Checkpoints inside pieces.
  small_config.dp.accountant = 'rdp'  # PLD per checkpoint: a minute here.
  results = train_and_evaluate(small_config, str(tmp_path), log=_QUIET)
  report = ledger_lib.verify_workdir(str(tmp_path))
  assert report['executions'] == small_config.train.num_steps
  assert report['epsilon'] == pytest.approx(results['epsilon'], rel=1e-9)
  entries = ledger_lib.Ledger(str(tmp_path), write=False).entries
  events = {str(e['data']['event']) for e in entries if e['kind'] ==
            'segment'}
  assert len(events) == 3  # One step event per piece.


@pytest.mark.parametrize('field, value', [
    ('noise_schedule', 'cosin'), ('noise_schedule_final_ratio', 0.0),
    ('noise_schedule_final_ratio', math.inf), ('noise_schedule_segments', 1),
])
def test_bad_schedule_settings_name_their_field(field, value):
  config = base.get_config()
  config.dp.noise_schedule = 'cosine'
  config.dp.noise_schedule_final_ratio = 0.5
  config.dp[field] = value
  with pytest.raises(ConfigError, match=f'dp.{field}'):
    build_mechanism(config.dp, config.perf, 1437, 100, None, 0)


def test_the_ledger_checks_each_segment_against_its_planned_piece():
  pieces = [[2, {'e': 'A'}], [3, {'e': 'B'}]]
  ok = lambda first, count, event: ledger_lib._matches_pieces(  # pylint: disable=protected-access
      {'first': first, 'count': count, 'event': {'e': event}}, pieces)
  assert ok(0, 2, 'A') and ok(2, 3, 'B')
  assert ok(4, 10, 'B')  # Past the plan, the last piece continues.
  assert not ok(1, 2, 'A')  # Crosses into the next piece.
  assert not ok(2, 1, 'A')  # Another piece's (larger-σ) event.
  assert not ok(0, 1, 'B')

"""Accounting: published values, calibration, and the coupled mechanism."""

import math

import dp_accounting
import ml_collections
import pytest

from jaxdp import accounting
from jaxdp.errors import ConfigError
from jaxdp.mechanism import build_mechanism
from jaxdp.mechanism import hand_built_dp

_ADD_REMOVE = dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE


def _dp(**overrides):
  dp = hand_built_dp(**{
      'sampler': 'poisson', 'batch_size': 256, 'clip_norm': 1.0,
      'noise_multiplier': 1.1, 'target_epsilon': None, 'delta': 1e-5,
      'accountant': 'rdp_classic', 'allow_large_delta': False})
  dp.update(overrides)
  return dp


def _perf(microbatch=None, overflow=1e-3):
  return ml_collections.ConfigDict({'clipping': 'fast',
                                    'microbatch_size': microbatch,
                                    'batch_overflow_probability': overflow})


def _mechanism(dp, n=60_000, steps=None, epochs=None, perf=None,
               num_devices=1):
  return build_mechanism(dp, perf or _perf(), n, steps, epochs, seed=0,
                         num_devices=num_devices)


def test_tf_privacy_tutorial_value():
  # TF Privacy's MNIST tutorial: N=60000, B=256, σ=1.1, 60 epochs -> ε ≈ 3.01.
  mechanism = _mechanism(_dp(), epochs=60)
  assert mechanism.num_steps == 14063
  assert mechanism.epsilon() == pytest.approx(3.01, abs=0.01)


def test_opacus_readme_value():
  # Opacus README: q=0.004 (B=240 of 60000), σ=1.3, 15 epochs -> ε ≈ 1.16.
  mechanism = _mechanism(_dp(batch_size=240, noise_multiplier=1.3), epochs=15)
  assert mechanism.num_steps == 3750
  assert mechanism.epsilon() == pytest.approx(1.16, abs=0.01)


def test_accountants_are_ordered_by_tightness():
  eps = {name: _mechanism(_dp(accountant=name), epochs=60).epsilon()
         for name in accounting.ACCOUNTANTS}
  assert eps['pld'] < eps['rdp'] < eps['rdp_classic']


@pytest.mark.parametrize('name', accounting.ACCOUNTANTS)
def test_calibration_inverts_epsilon(name):
  dp = _dp(noise_multiplier=None, target_epsilon=2.0, accountant=name,
           batch_size=200)
  mechanism = _mechanism(dp, n=10_000, steps=500)
  sigma = mechanism.noise_multiplier
  assert mechanism.epsilon() <= 2.0
  assert mechanism.epsilon() == pytest.approx(2.0, rel=2e-3)
  below = _mechanism(_dp(noise_multiplier=sigma - 0.005, accountant=name,
                         batch_size=200), n=10_000, steps=500)
  assert below.epsilon() > 2.0


def test_performance_settings_do_not_change_epsilon_or_sigma():
  dp = _dp(noise_multiplier=None, target_epsilon=3.0, accountant='rdp')
  reference = _mechanism(dp, epochs=5)
  for perf, devices in ((_perf(1), 1), (_perf(16), 1), (_perf(64, 1e-9), 1),
                        (_perf(None, 0.3), 1), (_perf(16), 8),
                        (_perf(None), 512)):
    other = _mechanism(dp, epochs=5, perf=perf, num_devices=devices)
    assert other.noise_multiplier == reference.noise_multiplier
    assert other.epsilon() == reference.epsilon()
    # Every device gets whole microbatches.
    assert other.sampler.padded_size % ((perf.microbatch_size or 1) *
                                        devices) == 0


def test_poisson_mechanism_parts_agree():
  mechanism = _mechanism(_dp(clip_norm=0.3), epochs=1)
  event = mechanism.step_event()
  assert isinstance(event, dp_accounting.PoissonSampledDpEvent)
  assert event.sampling_probability == mechanism.sampler.sampling_probability
  assert event.sampling_probability == 256 / 60_000
  # The accountant sees noise std / sensitivity = σC / C = σ.
  assert event.event.noise_multiplier == pytest.approx(1.1)
  assert mechanism.noise_std == pytest.approx(1.1 * 0.3)
  assert mechanism.expected_batch_size == 256
  assert mechanism.neighboring_relation == _ADD_REMOVE


def test_fixed_size_mechanism_uses_replace_one_with_twice_the_sensitivity():
  mechanism = _mechanism(_dp(sampler='fixed_size', accountant='rdp'),
                         epochs=1)
  event = mechanism.step_event()
  assert isinstance(event, dp_accounting.SampledWithoutReplacementDpEvent)
  assert (event.source_dataset_size, event.sample_size) == (60_000, 256)
  assert event.event.noise_multiplier == pytest.approx(1.1 / 2)
  assert mechanism.sensitivity == 2.0


def test_fixed_size_with_pld_is_refused():
  with pytest.raises(ConfigError, match='dp.accountant.*cannot account'):
    _mechanism(_dp(sampler='fixed_size', accountant='pld'), epochs=1)


def test_budget_that_cannot_be_met_refuses_to_start():
  with pytest.raises(ConfigError, match=r'dp.noise_multiplier.*ε=.*> '
                     r'dp.target_epsilon=1.0.*use σ ≥'):
    _mechanism(_dp(target_epsilon=1.0), epochs=60)


def test_budget_that_is_met_runs_with_the_given_sigma():
  mechanism = _mechanism(_dp(target_epsilon=3.1), epochs=60)
  assert mechanism.noise_multiplier == 1.1


@pytest.mark.parametrize('overrides, field', [
    ({'delta': 1e-3}, 'dp.delta'),
    ({'delta': 0.0}, 'dp.delta'),
    ({'clip_norm': 0.0}, 'dp.clip_norm'),
    ({'noise_multiplier': -1.0}, 'dp.noise_multiplier'),
    ({'noise_multiplier': None}, 'dp.noise_multiplier'),
    ({'noise_multiplier': None, 'target_epsilon': -1.0}, 'dp.target_epsilon'),
    ({'accountant': 'moments'}, 'dp.accountant'),
    ({'sampler': 'shuffle'}, 'dp.sampler'),
    ({'batch_size': 70_000}, 'dp.batch_size'),
    ({'noise_multiplier': 0.0, 'target_epsilon': 1.0}, 'dp.noise_multiplier'),
])
def test_bad_settings_name_their_field(overrides, field):
  with pytest.raises(ConfigError) as info:
    _mechanism(_dp(**overrides), epochs=1)
  assert info.value.field == field
  assert 'Fix:' in str(info.value)


def test_large_delta_is_accepted_only_when_asked():
  mechanism = _mechanism(_dp(delta=1e-3, allow_large_delta=True), epochs=1)
  assert math.isfinite(mechanism.epsilon())


def test_non_private_baseline_reports_infinite_epsilon():
  mechanism = _mechanism(_dp(noise_multiplier=0.0, clip_norm=math.inf),
                         epochs=1)
  assert not mechanism.is_private
  assert mechanism.epsilon() == math.inf
  assert mechanism.summary()['epsilon'] is None


def test_epsilon_grows_with_steps():
  mechanism = _mechanism(_dp(accountant='pld'), epochs=10)
  values = [mechanism.epsilon(t) for t in (0, 100, 1000, mechanism.num_steps)]
  assert values[0] == 0.0
  assert values == sorted(values) and values[1] < values[2] < values[3]

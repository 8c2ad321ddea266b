"""Audits end to end, and the deliberate bugs they must catch."""

import dataclasses
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import audit as audit_config
from configs import base
from jaxdp.audit import canaries
from jaxdp.audit import mutations
from jaxdp.audit import report
from jaxdp.audit import run
from jaxdp.errors import ConfigError
from jaxdp.mechanism import build_mechanism

_ROOT = pathlib.Path(__file__).resolve().parent.parent


def _mechanism(num_steps=100, batch_size=256):
  config = audit_config.get_config()
  config.dp.batch_size = batch_size
  config.dp.accountant = 'rdp'  # Quicker to calibrate than PLD.
  return build_mechanism(config.dp, config.perf, 2437, num_steps, None, 0)


def test_none_is_the_real_mechanism():
  real = _mechanism()
  same = mutations.mutate(real, 'none')
  assert same.epsilon() == real.epsilon()
  assert same.step_event() == real.step_event()
  zeros = {'w': jnp.zeros(1000)}
  out = [m.noise_transform(3).update(zeros, m.noise_transform(3).init(zeros))[0]
         for m in (real, same)]
  np.testing.assert_array_equal(out[0]['w'], out[1]['w'])


def _clipped_sum(mechanism):
  # Each example's gradient is its input: norms 0.5, 5 and 50.
  loss = lambda params, x: x @ params['w']
  inputs = jnp.array([[0.5, 0.0], [0.0, 5.0], [30.0, 40.0]])
  total, _ = mechanism.clipped_grad_sum(loss)({'w': jnp.zeros(2)}, inputs,
                                              jnp.ones(3, bool))
  return np.asarray(total['w'])


def test_no_clipping_sums_raw_gradients():
  real = _mechanism()
  np.testing.assert_allclose(_clipped_sum(real), [0.5 + 0.6, 1.0 + 0.8],
                             rtol=1e-5)
  np.testing.assert_allclose(
      _clipped_sum(mutations.mutate(real, 'no_clipping')), [30.5, 45.0],
      rtol=1e-5)


def _noise_draws(mechanism, steps=2, size=20000):
  tx = mechanism.noise_transform(7)
  zeros = {'w': jnp.zeros(size)}
  state = tx.init(zeros)
  draws = []
  for _ in range(steps):
    mean, state = tx.update(zeros, state)
    draws.append(np.asarray(mean['w']) * mechanism.expected_batch_size)
  return draws


def test_noise_divided_by_batch_is_b_times_too_small():
  real = _mechanism()
  assert np.std(_noise_draws(real)[0]) == pytest.approx(real.noise_std,
                                                         rel=0.03)
  broken = mutations.mutate(real, 'noise_divided_by_batch')
  assert np.std(_noise_draws(broken)[0]) == pytest.approx(
      real.noise_std / real.expected_batch_size, rel=0.03)


def test_reused_noise_key_repeats_the_noise():
  real = _mechanism()
  first, second = _noise_draws(real)
  assert abs(np.corrcoef(first, second)[0, 1]) < 0.05
  first, second = _noise_draws(mutations.mutate(real, 'reused_noise_key'))
  np.testing.assert_array_equal(first, second)


def test_wrong_sampling_rate_understates_epsilon():
  real = _mechanism()
  broken = mutations.mutate(real, 'wrong_sampling_rate')
  # It claims the target ε, with a smaller σ than the real mechanism needs.
  assert broken.epsilon() <= real.target_epsilon
  assert broken.noise_multiplier < real.noise_multiplier
  # It samples with the true q ...
  assert broken.sampler.sample(5).indices.tolist() == (
      real.sampler.sample(5).indices.tolist())
  assert broken.sampling_probability == real.sampling_probability
  # ... so its true ε, accounted with the true q, is far above the claim.
  truth = dataclasses.replace(real, noise_multiplier=broken.noise_multiplier)
  assert truth.epsilon() > 3 * broken.epsilon()


def test_mutations_cannot_be_reached_from_a_training_config():
  names = []
  def walk(config, prefix=''):
    for key, value in config.items():
      if hasattr(value, 'items'):
        walk(value, f'{prefix}{key}.')
      else:
        names.append(prefix + key)
  walk(base.get_config())
  assert not [n for n in names if 'mutation' in n]
  importers = [p for p in (_ROOT / 'jaxdp').rglob('*.py')
               if 'import mutations' in p.read_text()
               and p.parent.name != 'audit']
  assert importers == []


def test_canaries():
  from jaxdp import data
  dataset = data.digits.load_digits()
  mislabelled = canaries.make('mislabelled', 100, dataset, seed=0)
  assert np.all(mislabelled.labels != _true_labels(mislabelled, dataset))
  assert len(mislabelled.test_labels) == len(dataset.test_labels) - 100
  ood = canaries.make('ood', 50, dataset, seed=0)
  assert ood.images.shape == (50, 8, 8, 1)
  presence = canaries.draw_presence(20000, seed=1)
  assert abs(presence.mean() - 0.5) < 0.02
  with pytest.raises(ConfigError, match='--canaries'):
    canaries.make('mislabelled', 1000, dataset, seed=0)
  with pytest.raises(ConfigError, match='--canary_type'):
    canaries.make('dirac', 10, dataset, seed=0)


def _true_labels(canary_set, dataset):
  # Mislabelled canaries are held-out images labelled with the next class.
  rows = [np.flatnonzero((dataset.test_images == image).all((1, 2, 3)))[0]
          for image in canary_set.images]
  return dataset.test_labels[rows]


def test_gradient_canary_is_clipped_to_exactly_c():
  # Through the real clipped sum: a present gradient canary adds C·e_i to
  # the probe and nothing elsewhere.
  from jaxdp import models
  module = canaries.Probed(models.MLP((8,), 10))
  ids = jnp.eye(3, dtype=jnp.float32)[jnp.array([1, 0])]
  params = module.init(jax.random.key(0), jnp.zeros((2, 8, 8, 1)),
                       ids)['params']
  mechanism = _mechanism()
  loss = canaries.probed_loss(module, mechanism.clip_norm)
  batch = (jnp.zeros((2, 8, 8, 1)), jnp.zeros(2, jnp.int32), ids,
           jnp.array([True, False]))
  total, stats = mechanism.clipped_grad_sum(loss)(params, batch,
                                                  jnp.array([True, False]))
  np.testing.assert_allclose(total['canary_probe']['kernel'][:, 0],
                             [0.0, mechanism.clip_norm, 0.0], rtol=1e-6)
  assert float(stats.norms[0]) == pytest.approx(
      canaries.GRADIENT_NORM_IN_CLIPS * mechanism.clip_norm, rel=1e-5)


def _fast_config():
  config = audit_config.get_config()
  config.model.hidden_sizes = (16,)
  config.train.num_steps = 40
  config.dp.accountant = 'rdp'  # Quicker to calibrate than PLD.
  return config


def test_one_run_audit_flags_no_clipping_and_not_the_real_code(tmp_path):
  """The fast mutation test: 500 gradient canaries, 40 steps, claimed ε = 1."""
  lines = {}
  for mutation in ('none', 'no_clipping'):
    audit = run.run_audit(_fast_config(), run.AuditSettings(
        canaries=500, mutation=mutation), log=lambda _: None)
    lines[mutation] = report.summary(audit)
  paths = report.write(str(tmp_path), lines[mutation], audit)
  none, broken = lines['none'], lines['no_clipping']
  assert none['epsilon_claimed'] == pytest.approx(1.0, abs=1e-3)
  # The audit could certify more than the claim, so its verdicts mean
  # something: the real code stays below, the broken code goes above.
  assert none['max_certifiable'] > 2 * none['epsilon_claimed']
  assert not none['leak_detected']
  assert none['epsilon_lower_bound'] < none['epsilon_claimed']
  assert broken['leak_detected']
  assert broken['epsilon_lower_bound'] > broken['epsilon_claimed']
  assert broken['auc'] > none['auc']
  # The outputs: JSON with the promised keys, a markdown table, a PNG.
  saved = json.loads(pathlib.Path(paths['audit.json']).read_text())
  for key in ('epsilon_claimed', 'epsilon_lower_bound', 'confidence',
              'num_canaries', 'auc'):
    assert key in saved
  assert pathlib.Path(paths['audit_roc.png']).read_bytes()[:8] == (
      b'\x89PNG\r\n\x1a\n')
  assert 'ε lower bound' in pathlib.Path(paths['audit.md']).read_text()


def test_audit_settings_are_checked():
  config = audit_config.get_config()
  with pytest.raises(ConfigError, match='--mode'):
    run.check(run.AuditSettings(mode='two_run'), config)
  with pytest.raises(ConfigError, match='--canaries'):
    run.check(run.AuditSettings(mode='multi_run', canaries=2), config)
  with pytest.raises(ConfigError, match='--shadow_models'):
    run.check(run.AuditSettings(mode='lira', shadow_models=2), config)
  with pytest.raises(ConfigError, match='--mutation'):
    mutations.mutate(_mechanism(), 'no_noise')
  with pytest.raises(ConfigError, match='--canaries'):
    run.check(run.AuditSettings(canaries=5), config)
  config.dp.pca_components = 10
  with pytest.raises(ConfigError, match='^dp.pca_components'):
    run.check(run.AuditSettings(), config)
  config.dp.pca_components = 0
  config.data.augmult = 2
  with pytest.raises(ConfigError, match='^data.augmult'):
    run.check(run.AuditSettings(), config)


@pytest.mark.slow
@pytest.mark.parametrize('mutation', [
    m for m in mutations.MUTATIONS if m not in mutations.CORRELATED_MUTATIONS])
def test_every_mutation_is_caught_by_the_one_run_audit(mutation):
  """The setting of docs/audits.md: 1000 gradient canaries, configs/audit.py."""
  audit = run.run_audit(audit_config.get_config(), run.AuditSettings(
      mutation=mutation), log=lambda _: None)
  line = report.summary(audit)
  assert line['leak_detected'] == (mutation != 'none')


@pytest.mark.slow
@pytest.mark.parametrize('mode,canary_type', [('multi_run', 'gradient'),
                                              ('lira', 'mislabelled')])
def test_other_modes_run_and_stay_below_the_claim(mode, canary_type):
  audit = run.run_audit(_fast_config(), run.AuditSettings(
      mode=mode, canaries=40 if mode == 'multi_run' else 100,
      canary_type=canary_type, shadow_models=6), log=lambda _: None)
  line = report.summary(audit)
  assert not line['leak_detected']
  assert line['runs'] == (40 if mode == 'multi_run' else 6)

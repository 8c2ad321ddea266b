"""Divergence recovery: roll back, lower the learning rate, count every step."""

import shutil

import pytest

import run_configs
from jaxdp.train import checkpointing
from jaxdp.train import ledger
from jaxdp.errors import ConfigError
from jaxdp.train import train_and_evaluate

_QUIET = lambda line: None


def _exploding_config():
  """Digits with a learning rate that blows the model up within 5 steps."""
  return run_configs.fixed_sigma_config(20, eval__every_steps=5,
                                        optimizer__learning_rate=1e29)


def _kinds(workdir):
  return [e['kind'] for e in ledger.Ledger(str(workdir)).entries]


def test_a_rollback_lowers_the_rate_and_keeps_the_undone_steps(tmp_path):
  config = _exploding_config()
  config.recovery.lr_factor = 1e-30  # Back to 0.1 after one rollback.
  lines = []
  results = train_and_evaluate(config, str(tmp_path), log=lines.append)
  assert results['status'] == 'completed' and results['steps'] == 20
  assert results['rollbacks'] == 1
  assert results['executed_steps'] == 25  # 5 undone steps stay spent.
  assert results['accuracy'] > 0.5
  rollback = results['rollback_log'][0]
  assert rollback['step'] == 5 and rollback['to_step'] == 0
  assert 'held-out loss' in rollback['reason']
  assert any('rolled back to step 0' in line for line in lines)
  report = ledger.verify_workdir(str(tmp_path))
  assert report['executions'] == 25 and report['epsilon'] == results['epsilon']
  assert 'rollback' in _kinds(tmp_path)
  # ε is that of 25 executions, more than the 20 planned.
  assert results['epsilon'] > results['planned_epsilon']


def test_rollbacks_never_push_a_run_over_its_budget(tmp_path):
  config = _exploding_config()
  config.recovery.lr_factor = 1e-30
  config.dp.noise_multiplier = None
  config.dp.target_epsilon = 3.0  # σ calibrated for exactly 20 steps.
  results = train_and_evaluate(config, str(tmp_path), log=_QUIET)
  assert results['status'] == 'budget_exhausted'
  assert results['epsilon'] <= 3.0
  assert results['steps'] < 20 <= results['executed_steps']
  assert 'budget_stop' in _kinds(tmp_path)
  assert ledger.verify_workdir(str(tmp_path))['epsilon'] <= 3.0


def test_a_run_that_keeps_diverging_stops_after_max_rollbacks(tmp_path):
  config = _exploding_config()
  config.recovery.max_rollbacks = 2
  results = train_and_evaluate(config, str(tmp_path), log=_QUIET)
  assert results['status'] == 'diverged' and results['rollbacks'] == 2
  assert results['executed_steps'] == 15  # Three tries of 5 steps.
  assert results['accuracy'] is not None  # The last good checkpoint.
  assert _kinds(tmp_path).count('rollback') == 2
  assert 'divergence_stop' in _kinds(tmp_path)
  assert ledger.verify_workdir(str(tmp_path))['executions'] == 15


@pytest.mark.parametrize('field, value', [
    ('recovery.lr_factor', 1.5), ('recovery.max_rollbacks', -1),
    ('recovery.loss_spike_factor', -2.0), ('checkpoint.keep', 0),
    ('checkpoint.every_steps', -5)])
def test_bad_recovery_and_checkpoint_settings_are_refused(tmp_path, field,
                                                         value):
  config = _exploding_config()
  run_configs.set_field(config, field, value)
  with pytest.raises(ConfigError, match=field.replace('.', r'\.')):
    train_and_evaluate(config, str(tmp_path), log=_QUIET)


def test_a_rollback_while_rerunning_lost_steps_never_reuses_their_draws(
    tmp_path):
  config = _exploding_config()
  config.recovery.max_rollbacks = 0
  first = train_and_evaluate(config, str(tmp_path), log=_QUIET)
  assert first['status'] == 'diverged' and first['executed_steps'] == 5
  # A crash before the last checkpoint: the ledger holds 5 executions, the
  # newest checkpoint none. Resuming re-runs draw 0 and, with evaluation now
  # every step, diverges during the re-run.
  shutil.rmtree(tmp_path / checkpointing.DIRNAME / '5')
  config = _exploding_config()
  config.eval.every_steps = 1
  config.recovery.lr_factor = 1e-30
  results = train_and_evaluate(config, str(tmp_path), log=_QUIET)
  assert results['rollbacks'] == 1
  assert results['rollback_log'][0]['executed'] == 5  # Not 1: draws 1-4 spent.
  assert results['executed_steps'] == 5 + 20
  assert ledger.verify_workdir(str(tmp_path))['executions'] == 25

"""The command-line entry points, run as a user runs them."""

import json
import os
import subprocess
import sys

import pytest

from jaxdp.train import ledger

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args):
  return subprocess.run([sys.executable, '-m', *args], cwd=_ROOT,
                        capture_output=True, text=True, timeout=300)


def _last_json(stdout):
  return json.loads(stdout.strip().splitlines()[-1])


def test_account_prints_epsilon_as_json():
  out = _run('experiments.account', '--num_examples=60000',
             '--batch_size=256', '--noise_multiplier=1.1', '--epochs=60',
             '--delta=1e-5', '--accountant=rdp_classic')
  assert out.returncode == 0, out.stderr
  result = _last_json(out.stdout)
  assert result['epsilon'] == pytest.approx(3.01, abs=0.01)
  for key in ('epsilon', 'delta', 'noise_multiplier', 'steps',
              'sampling_probability', 'accountant'):
    assert key in result
  assert result['steps'] == 14063


def test_account_calibrates_sigma_for_a_target():
  out = _run('experiments.account', '--num_examples=60000',
             '--batch_size=240', '--target_epsilon=1.16', '--epochs=15',
             '--delta=1e-5', '--accountant=rdp_classic')
  assert out.returncode == 0, out.stderr
  result = _last_json(out.stdout)
  assert result['epsilon'] <= 1.16
  assert result['noise_multiplier'] == pytest.approx(1.3, abs=0.01)


def test_account_reports_a_non_private_sigma():
  out = _run('experiments.account', '--num_examples=1000', '--batch_size=10',
             '--noise_multiplier=0', '--steps=5')
  assert out.returncode == 0, out.stderr
  assert _last_json(out.stdout)['epsilon'] is None
  assert 'not private' in out.stdout


def test_train_cli_runs_the_non_private_baseline(tmp_path):
  out = _run('experiments.train', '--config=configs/base.py',
             f'--workdir={tmp_path}', '--config.train.num_steps=2',
             '--config.dp.target_epsilon=inf', '--config.dp.noise_multiplier=0',
             '--config.dp.clip_norm=inf')
  assert out.returncode == 0, out.stderr
  result = _last_json(out.stdout)
  assert result['epsilon'] is None and result['clip_norm'] is None
  report = ledger.verify_workdir(str(tmp_path))  # ε = ∞ is recorded as null.
  assert report['epsilon'] is None and report['executions'] == 2


def test_account_rejects_ambiguous_flags():
  out = _run('experiments.account', '--num_examples=100', '--batch_size=10',
             '--epochs=1')
  assert out.returncode == 2
  assert 'exactly one of --noise_multiplier and --target_epsilon' in out.stderr


def test_train_cli_ends_with_json_and_writes_results(tmp_path):
  out = _run('experiments.train', '--config=configs/base.py',
             f'--workdir={tmp_path}', '--config.train.num_steps=3',
             '--config.eval.every_steps=0', '--config.dp.target_epsilon=8',
             '--config.dp.accountant=rdp')  # Calibrates faster than PLD.
  assert out.returncode == 0, out.stderr
  result = _last_json(out.stdout)
  for key in ('accuracy', 'epsilon', 'delta', 'noise_multiplier', 'steps',
              'wall_seconds'):
    assert key in result
  assert result['steps'] == 3 and result['epsilon'] <= 8
  assert 'step 3/3' in out.stdout
  with open(tmp_path / 'results.json') as f:
    assert json.load(f)['accuracy'] == result['accuracy']


def test_train_cli_rejects_a_mistyped_key(tmp_path):
  out = _run('experiments.train', '--config=configs/base.py',
             f'--workdir={tmp_path}', '--config.dp.clipnorm=1')
  assert out.returncode == 2
  assert "error: config: no field named 'clipnorm'" in out.stderr
  assert "did you mean 'clip_norm'" in out.stderr
  assert 'Traceback' not in out.stderr


def test_train_cli_bad_value_gets_a_message_not_a_traceback(tmp_path):
  out = _run('experiments.train', '--config=configs/base.py',
             f'--workdir={tmp_path}', '--config.dp.delta=0.5')
  assert out.returncode == 2
  assert 'error: dp.delta' in out.stderr and 'Fix:' in out.stderr
  assert 'Traceback' not in out.stderr

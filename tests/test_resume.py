"""Kill-and-resume: a resumed run ends bit-identical to one never interrupted."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

import run_configs
from jaxdp.train import checkpointing
from jaxdp.train import ledger
from jaxdp.errors import ConfigError
from jaxdp.train import train_and_evaluate

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_QUIET = lambda line: None

# A fixed σ (no calibration) and RDP keep the run short; the kill lands as
# soon as a mid-run checkpoint is on disk. The command line gets the same.
_OVERRIDES = {
    'train.num_steps': 60, 'eval.every_steps': 30,
    'checkpoint.every_steps': 10, 'dp.noise_multiplier': 1.0,
    'dp.target_epsilon': 30.0, 'dp.accountant': 'rdp',
}


def _config():
  overrides = {k.replace('.', '__'): v for k, v in _OVERRIDES.items()
               if k != 'train.num_steps'}
  return run_configs.fixed_sigma_config(_OVERRIDES['train.num_steps'],
                                        **overrides)


def _cli(workdir):
  return [sys.executable, '-m', 'experiments.train', '--config=configs/base.py',
          f'--workdir={workdir}'] + [f'--config.{k}={v}'
                                     for k, v in _OVERRIDES.items()]


def _leaves(workdir):
  """(newest checkpoint, its arrays exactly as written)."""
  checkpointer = checkpointing.Checkpointer(str(workdir), keep=None)
  latest = checkpointer.latest()
  path = os.path.join(checkpointer.directory, str(latest), 'state')
  state = ocp.StandardCheckpointer().restore(path)
  return latest, [np.asarray(x) for x in jax.tree_util.tree_leaves(state)]


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('uninterrupted')
  results = train_and_evaluate(_config(), str(workdir), log=_QUIET)
  return workdir, results


def _start_and_stop(workdir, how):
  """Starts the CLI and stops it with `how` once a mid-run checkpoint exists."""
  process = subprocess.Popen(_cli(workdir), cwd=_ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
  checkpoints = workdir / checkpointing.DIRNAME
  deadline = time.time() + 240
  while time.time() < deadline and process.poll() is None:
    done = [int(p) for p in os.listdir(checkpoints)
            if p.isdigit()] if checkpoints.exists() else []
    if any(0 < d < 50 for d in done):
      process.send_signal(how)
      break
    time.sleep(0.005)
  out, err = process.communicate(timeout=240)
  return process.returncode, out, err


def _assert_same_run(workdir, reference):
  ref_dir, ref_results = reference
  results = json.loads((workdir / 'results.json').read_text())
  assert results['status'] == 'completed'
  assert results['epsilon'] == ref_results['epsilon']
  assert results['executed_steps'] == ref_results['executed_steps'] == 60
  step, leaves = _leaves(workdir)
  ref_step, ref_leaves = _leaves(ref_dir)
  assert step == ref_step == 60
  assert len(leaves) == len(ref_leaves)
  for a, b in zip(leaves, ref_leaves):
    np.testing.assert_array_equal(a, b)  # Bit for bit.
  report = ledger.verify_workdir(str(workdir))
  assert report['epsilon'] == ref_results['epsilon']
  assert report['executions'] == 60


def test_sigkill_then_resume_is_bit_identical(tmp_path, reference):
  workdir = tmp_path / 'killed'
  code, _, err = _start_and_stop(workdir, signal.SIGKILL)
  assert code == -signal.SIGKILL, err  # Killed mid-run, not finished.
  results = train_and_evaluate(_config(), str(workdir), log=_QUIET)
  assert results['steps'] == 60
  _assert_same_run(workdir, reference)


def test_sigterm_saves_a_checkpoint_and_resume_is_bit_identical(tmp_path,
                                                                reference):
  workdir = tmp_path / 'terminated'
  code, out, err = _start_and_stop(workdir, signal.SIGTERM)
  assert code == 75, err  # Interrupted: rerun to resume.
  assert 'SIGTERM' in out and 'checkpoint saved' in out
  stopped = json.loads(out.strip().splitlines()[-1])
  assert stopped['status'] == 'interrupted' and stopped['steps'] < 60
  kinds = [e['kind'] for e in ledger.Ledger(str(workdir)).entries]
  assert 'interrupted' in kinds
  train_and_evaluate(_config(), str(workdir), log=_QUIET)
  _assert_same_run(workdir, reference)


@pytest.mark.parametrize('field, value', [
    ('dp.noise_multiplier', 1.3),
    ('dp.clip_norm', 2.0),
    ('dp.batch_size', 128),
    ('dp.delta', 1e-6),
    ('dp.sampler', 'fixed_size'),
    ('dp.accountant', 'pld'),
    ('dp.target_epsilon', 40.0),
    ('seed', 1),
    ('dp.normalization_noise_multiplier', 8.0),  # A release before step 1.
])
def test_resume_with_a_changed_privacy_setting_is_refused(reference, field,
                                                          value, tmp_path):
  ref_dir, _ = reference
  workdir = tmp_path / 'copy'
  subprocess.run(['cp', '-r', str(ref_dir), str(workdir)], check=True)
  before = (workdir / ledger.FILENAME).read_text()
  config = _config()  # RDP: supports both samplers.
  run_configs.set_field(config, field, value)
  with pytest.raises(ConfigError) as error:
    train_and_evaluate(config, str(workdir), log=_QUIET)
  assert error.value.field == field
  assert 'new --workdir' in str(error.value)
  assert (workdir / ledger.FILENAME).read_text() == before  # Nothing spent.


def test_resume_with_another_model_names_the_checkpoint(reference, tmp_path):
  ref_dir, _ = reference
  workdir = tmp_path / 'copy'
  subprocess.run(['cp', '-r', str(ref_dir), str(workdir)], check=True)
  config = _config()
  config.model.hidden_sizes = (32,)
  with pytest.raises(ConfigError, match='checkpoint') as error:
    train_and_evaluate(config, str(workdir), log=_QUIET)
  assert error.value.field == 'checkpoint'

"""Data parallelism, accumulation and multi-host: one device's results.

Many devices, many microbatches or two hosts must give the parameters one
device gives (up to float summation order), spend the same ε, and add the
noise once: its std on the update is σC/B, not √D σC/B. The 8-device checks
run in a subprocess (`data_parallel_worker.py`) because JAX fixes the number
of simulated CPU devices when it starts.
"""

import json
import fcntl
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np
import pytest
from scipy import stats

from jaxdp.train import ledger
from jaxdp.train import train_and_evaluate
from run_configs import data_parallel_run_config

_TESTS = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(_TESTS)


def _env(devices: int) -> dict:
  path = os.pathsep.join(p for p in (_ROOT, _TESTS,
                                     os.environ.get('PYTHONPATH')) if p)
  return dict(os.environ, PYTHONPATH=path, XLA_FLAGS=(
      f'--xla_force_host_platform_device_count={devices}'))


@pytest.fixture(scope='module')
def eight_devices():
  done = subprocess.run(
      [sys.executable, os.path.join(_TESTS, 'data_parallel_worker.py')],
      cwd=_ROOT, env=_env(8), capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-4000:]
  return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope='module')
def one_device_run():
  with tempfile.TemporaryDirectory() as workdir:
    return train_and_evaluate(data_parallel_run_config(5), workdir,
                              log=lambda line: None)


def test_an_audit_sees_the_same_releases_on_eight_devices(eight_devices):
  # The privatised gradients on the canary probe, in units of one clipped
  # canary (noise std σ = 1 per step): the data-parallel step (FSDP, so the
  # probe's recorded gradient is split over devices too) releases what the
  # one-device step does, so the audit covers it too.
  audit = eight_devices['audit']
  assert audit['scale'] > 1.0
  assert audit['max_abs_diff'] < 1e-4


def test_devices_and_microbatches_give_one_devices_parameters(eight_devices):
  # The noise (std σC/B = 0.03 per step) is drawn from the same key
  # whatever the layout, so adding it twice, per device, or at another scale
  # would move the parameters by ~0.03, far above this tolerance.
  assert eight_devices['reference_scale'] > 0.1
  for name, variant in eight_devices['variants'].items():
    assert variant['max_abs_diff'] < 1e-5, name
    assert variant['epsilon'] == eight_devices['reference_epsilon'], name
    assert variant['compiles'] == 1, name  # Three steps, one compilation.


def test_noise_on_eight_devices_is_added_once(eight_devices):
  """Zero gradients, SGD with lr 1: the update is the noise divided by B."""
  noise = eight_devices['noise']

  def p_value(std):  # Two-sided chi-square test of N(0, std²) samples.
    statistic, n = noise['sum_of_squares'] / std**2, noise['count']
    return 2 * min(stats.chi2.cdf(statistic, n), stats.chi2.sf(statistic, n))

  std = noise['expected_std']
  assert p_value(std) > 1e-3
  assert p_value(std * np.sqrt(8)) < 1e-9  # Noise on every device's sum.
  assert p_value(std / np.sqrt(8)) < 1e-9  # Divided by a per-device batch.


def test_whole_run_on_eight_devices_matches_one_device(eight_devices,
                                                       one_device_run):
  run = eight_devices['run']
  assert run['num_devices'] == 8 and one_device_run['num_devices'] == 1
  assert run['epsilon'] == one_device_run['epsilon']
  np.testing.assert_allclose(run['test_loss'], one_device_run['test_loss'],
                             rtol=1e-5)
  assert run['accuracy'] == one_device_run['accuracy']
  # Five steps, evaluation and checkpoints: the step compiled once.
  assert run['train_step_compiles'] == 1


def test_scaling_reports_every_device_count(eight_devices):
  rows = eight_devices['scaling']
  assert set(rows) == {'8'}  # JSON keys.
  assert rows['8']['relative_to_first'] == 1.0
  for row in rows.values():
    assert row['median_ms'] > 0 and row['examples_per_s'] > 0


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


_TWO_HOST_RUN = ['--config.eval.every_steps=0',
                 '--config.dp.noise_multiplier=1', '--config.dp.accountant=rdp',
                 '--config.dp.target_epsilon=inf',
                 '--config.dp.sampler=fixed_size', '--config.dp.batch_size=64']


def _start_two_hosts(workdir, *overrides) -> list:
  """Two `experiments.train` processes on localhost, 2 CPU devices each."""
  if jax.config.jax_cpu_collectives_implementation in (None, '', 'none'):
    pytest.skip('this JAX has no CPU collectives (gloo or mpi): processes '
                'cannot add their sums')
  port = _free_port()
  return [subprocess.Popen(
      [sys.executable, '-m', 'experiments.train', '--config=configs/base.py',
       f'--workdir={workdir}', *_TWO_HOST_RUN, *overrides,
       f'--coordinator_address=localhost:{port}', '--num_processes=2',
       f'--process_id={i}'],
      cwd=_ROOT, env=_env(2), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True) for i in (0, 1)]


def _results(stdout: str) -> dict:
  """Host 0's final JSON line (Gloo's own lines may come after it)."""
  return json.loads([line for line in stdout.splitlines()
                     if line.startswith('{')][-1])


def test_two_hosts_match_one_host(one_device_run, tmp_path):
  """Two processes on localhost (2 CPU devices each) via JAX's runtime."""
  hosts = _start_two_hosts(tmp_path, '--config.train.num_steps=5')
  outputs = [h.communicate(timeout=300) for h in hosts]
  for h, (_, err) in zip(hosts, outputs):
    assert h.returncode == 0, err[-4000:]
  # Host 0 speaks for the run. (Gloo, JAX's CPU collectives, prints its own
  # connection lines on every host, from several threads at once: they are
  # not jaxdp's and can arrive cut and interleaved, so only jaxdp's own lines
  # are looked for.)
  jaxdp_lines = ('data ', 'model ', 'privacy:', 'step ', '{', 'error')
  spoke = [line for line in outputs[1][0].splitlines()
           if line.startswith(jaxdp_lines)]
  assert spoke == [], outputs[1]
  results = _results(outputs[0][0])
  assert (results['num_hosts'], results['num_devices']) == (2, 4)
  assert results['epsilon'] == one_device_run['epsilon']
  np.testing.assert_allclose(results['test_loss'],
                             one_device_run['test_loss'], rtol=1e-5)
  assert results['accuracy'] == one_device_run['accuracy']
  # One writer: one unbroken chain, anchored in the checkpoint orbax wrote.
  assert ledger.verify_workdir(str(tmp_path))['executions'] == 5


# Longer multi-host checks (about a minute each): python -m pytest -m slow


@pytest.mark.slow
def test_a_busy_workdir_stops_every_host(tmp_path):
  with open(tmp_path / '.lock', 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    hosts = _start_two_hosts(tmp_path, '--config.train.num_steps=5')
    outputs = [h.communicate(timeout=300) for h in hosts]
  for h, (_, err) in zip(hosts, outputs):
    assert h.returncode == 2, err[-2000:]
    assert 'error: workdir:' in err and 'in use by another run' in err
  assert not os.path.exists(tmp_path / ledger.FILENAME)


@pytest.mark.slow
def test_a_signal_to_host_1_stops_both_and_the_resume_is_exact(tmp_path):
  steps = '--config.train.num_steps=200'
  whole = _start_two_hosts(tmp_path / 'whole', steps)
  expected = _results(whole[0].communicate(timeout=600)[0])
  whole[1].communicate(timeout=600)
  hosts = _start_two_hosts(tmp_path / 'cut', steps)
  first = tmp_path / 'cut' / 'checkpoints' / '0'
  while not first.exists() and hosts[1].poll() is None:
    time.sleep(0.05)
  hosts[1].send_signal(signal.SIGTERM)
  outputs = [h.communicate(timeout=600) for h in hosts]
  assert [h.returncode for h in hosts] == [75, 75], outputs[0][1][-2000:]
  stopped = _results(outputs[0][0])
  assert stopped['status'] == 'interrupted' and stopped['steps'] < 200
  resumed = _start_two_hosts(tmp_path / 'cut', steps)
  outputs = [h.communicate(timeout=600) for h in resumed]
  assert [h.returncode for h in resumed] == [0, 0], outputs[0][1][-2000:]
  final = _results(outputs[0][0])
  assert final['test_loss'] == expected['test_loss']  # Bit-identical.
  assert final['executed_steps'] == 200
  assert ledger.verify_workdir(str(tmp_path / 'cut'))['executions'] == 200


@pytest.mark.slow
def test_rollbacks_on_two_hosts_keep_one_verified_ledger(tmp_path):
  hosts = _start_two_hosts(tmp_path, '--config.train.num_steps=6',
                           '--config.eval.every_steps=2',
                           '--config.recovery.loss_spike_factor=1e-6',
                           '--config.recovery.max_rollbacks=2')
  outputs = [h.communicate(timeout=300) for h in hosts]
  assert [h.returncode for h in hosts] == [1, 1], outputs[0][1][-2000:]
  results = _results(outputs[0][0])
  assert (results['status'], results['rollbacks']) == ('diverged', 2)
  report = ledger.verify_workdir(str(tmp_path))
  assert report['executions'] == results['executed_steps'] == 6

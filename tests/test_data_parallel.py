"""Data parallelism, accumulation and multi-host: one device's results.

Many devices, many microbatches or two hosts must give the parameters one
device gives (up to float summation order), spend the same ε, and add the
noise once: its std on the update is σC/B, not √D σC/B. The 8-device checks
run in a subprocess (`data_parallel_worker.py`) because JAX fixes the number
of simulated CPU devices when it starts.
"""

import json
import os
import socket
import subprocess
import sys
import tempfile

import jax
import numpy as np
import pytest
from scipy import stats

from jaxdp import ledger
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


def test_two_hosts_match_one_host(one_device_run, tmp_path):
  """Two processes on localhost (2 CPU devices each) via JAX's runtime."""
  if jax.config.jax_cpu_collectives_implementation in (None, '', 'none'):
    pytest.skip('this JAX has no CPU collectives (gloo or mpi): processes '
                'cannot add their sums')
  port = _free_port()
  overrides = ['--config.train.num_steps=5', '--config.eval.every_steps=0',
               '--config.dp.noise_multiplier=1', '--config.dp.accountant=rdp',
               '--config.dp.target_epsilon=inf',
               '--config.dp.sampler=fixed_size', '--config.dp.batch_size=64']
  hosts = [subprocess.Popen(
      [sys.executable, '-m', 'experiments.train', '--config=configs/base.py',
       f'--workdir={tmp_path}', *overrides,
       f'--coordinator_address=localhost:{port}', '--num_processes=2',
       f'--process_id={i}'],
      cwd=_ROOT, env=_env(2), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True) for i in (0, 1)]
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
  last = [line for line in outputs[0][0].splitlines()
          if line.startswith('{')][-1]
  results = json.loads(last)
  assert (results['num_hosts'], results['num_devices']) == (2, 4)
  assert results['epsilon'] == one_device_run['epsilon']
  np.testing.assert_allclose(results['test_loss'],
                             one_device_run['test_loss'], rtol=1e-5)
  assert results['accuracy'] == one_device_run['accuracy']
  # One writer: one unbroken chain, anchored in the checkpoint orbax wrote.
  assert ledger.verify_workdir(str(tmp_path))['executions'] == 5

"""dp.secure_noise: secret seeds from the OS, kept only in the checkpoints."""

import json
import shutil

import pytest

import run_configs
from jaxdp.train import checkpointing
from jaxdp.train import ledger
from jaxdp.errors import ConfigError
from jaxdp.mechanism import MAX_CONFIG_SEED
from jaxdp.train import train_and_evaluate

_QUIET = lambda line: None


def _config(steps):
  return run_configs.fixed_sigma_config(steps, dp__secure_noise=True)


def _meta(workdir):
  checkpointer = checkpointing.Checkpointer(str(workdir), keep=None)
  return checkpointer.read_meta(checkpointer.latest())


def test_secure_runs_differ_but_each_resumes_exactly(tmp_path):
  first = train_and_evaluate(_config(3), str(tmp_path / 'a'), log=_QUIET)
  second = train_and_evaluate(_config(3), str(tmp_path / 'b'), log=_QUIET)
  assert first['test_loss'] != second['test_loss']  # Same config seed.
  secret = _meta(tmp_path / 'a')['privacy_seed']
  assert secret > MAX_CONFIG_SEED
  # The secret is in the checkpoint only: not in results, config or ledger.
  for name in ('results.json', 'config.json', ledger.FILENAME):
    assert str(secret) not in (tmp_path / 'a' / name).read_text()
  start = json.loads((tmp_path / 'a' / ledger.FILENAME).read_text()
                     .splitlines()[0])
  assert start['data']['privacy']['seed'] is None
  assert start['data']['privacy']['secure_noise'] is True
  # Two copies of the same run, extended: the restored secret gives equal runs.
  for copy in ('a1', 'a2'):
    shutil.copytree(tmp_path / 'a', tmp_path / copy)
  lines = []
  one = train_and_evaluate(_config(6), str(tmp_path / 'a1'), log=lines.append)
  assert any('train.num_steps: 3 → 6' in line for line in lines)
  two = train_and_evaluate(_config(6), str(tmp_path / 'a2'), log=_QUIET)
  assert one['steps'] == two['steps'] == 6
  assert one['test_loss'] == two['test_loss']
  assert _meta(tmp_path / 'a1')['privacy_seed'] == secret


def test_turning_secure_noise_off_on_resume_is_refused(tmp_path):
  train_and_evaluate(_config(2), str(tmp_path), log=_QUIET)
  before = (tmp_path / ledger.FILENAME).read_text()
  config = _config(4)
  config.dp.secure_noise = False
  with pytest.raises(ConfigError) as error:
    train_and_evaluate(config, str(tmp_path), log=_QUIET)
  assert error.value.field == 'dp.secure_noise'
  assert (tmp_path / ledger.FILENAME).read_text() == before

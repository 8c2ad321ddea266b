"""Every kind of bad input stops the run with a message naming field and fix."""

import fcntl
import os
import shutil

import flax.linen as nn
import pytest

import run_configs
from jaxdp.train import checkpointing
from jaxdp.train import ledger
from jaxdp import models
from jaxdp.errors import ConfigError
from jaxdp.train import train_and_evaluate

_QUIET = lambda line: None


def _config():
  return run_configs.fixed_sigma_config(2)


# (what is wrong, overrides, the field the message must start with, words in it)
_CASES = [
    ('δ ≥ 1/N', {'dp.delta': 1e-3}, 'dp.delta', 'allow_large_delta'),
    ('σ < 0', {'dp.noise_multiplier': -1.0}, 'dp.noise_multiplier', '>= 0'),
    ('C = 0', {'dp.clip_norm': 0.0}, 'dp.clip_norm', '> 0'),
    ('C < 0', {'dp.clip_norm': -1.0}, 'dp.clip_norm', '> 0'),
    ('batch > N', {'dp.batch_size': 5000}, 'dp.batch_size', 'N=1437'),
    ('batch = 0', {'dp.batch_size': 0}, 'dp.batch_size', 'between 1'),
    ('batch < 0', {'dp.batch_size': -3}, 'dp.batch_size', 'between 1'),
    ('target ε ≤ 0', {'dp.noise_multiplier': None, 'dp.target_epsilon': 0.0},
     'dp.target_epsilon', '> 0'),
    ('unknown dataset', {'data.name': 'no_such_dataset'}, 'data.name',
     'no_such_dataset'),
    ('unknown model', {'model.name': 'resnet9000'}, 'model.name', 'mlp'),
    ('sampler/accountant mismatch',
     {'dp.sampler': 'fixed_size', 'dp.accountant': 'pld'}, 'dp.accountant',
     'cannot account'),
    ('shuffled batches', {'dp.sampler': 'shuffle'}, 'dp.sampler',
     'understates'),
    ('unknown accountant', {'dp.accountant': 'moments'}, 'dp.accountant',
     'pld'),
    ('missing offline dataset', {'data.name': 'mnist', 'data.source': 'files',
                                 'data.data_dir': '/nonexistent/mnist'},
     'data.data_dir', 'no original mnist files'),
    ('seed out of range', {'seed': -1}, 'seed', 'integer'),
    ('more devices than there are', {'perf.num_devices': 3},
     'perf.num_devices', 'devices JAX sees'),
    ('unknown parameter sharding', {'perf.param_sharding': 'zero3'},
     'perf.param_sharding', 'fsdp'),
    ('unknown features', {'data.features': 'wavelets'}, 'data.features',
     'scattering'),
    ('PCA without noise', {'dp.pca_components': 10}, 'dp.pca_noise_multiplier',
     '> 0'),
    ('a release with replace-one sampling',
     {'dp.sampler': 'fixed_size', 'dp.accountant': 'rdp',
      'dp.normalization_noise_multiplier': 8.0}, 'dp.sampler',
     'add/remove-one'),
]


@pytest.mark.parametrize('what, overrides, field, words', _CASES,
                         ids=[c[0] for c in _CASES])
def test_bad_setting_names_its_field_and_spends_nothing(tmp_path, what,
                                                       overrides, field, words):
  del what
  config = _config()
  for key, value in overrides.items():
    run_configs.set_field(config, key, value)
  with pytest.raises(ConfigError) as error:
    train_and_evaluate(config, str(tmp_path), log=_QUIET)
  assert error.value.field == field
  message = str(error.value)
  assert message.startswith(f'{field}: ') and 'Fix: ' in message
  assert words in message
  assert not os.path.exists(tmp_path / ledger.FILENAME)  # Nothing spent.


class _BatchNormMLP(nn.Module):
  num_classes: int

  @nn.compact
  def __call__(self, x):
    x = nn.Dense(16)(x.reshape((x.shape[0], -1)))
    x = nn.BatchNorm(use_running_average=False)(x)
    return nn.Dense(self.num_classes)(x)


def test_a_model_with_batchnorm_is_refused(tmp_path, monkeypatch):
  monkeypatch.setattr(models, 'build_model',
                      lambda model_config, classes: _BatchNormMLP(classes))
  with pytest.raises(ConfigError) as error:
    train_and_evaluate(_config(), str(tmp_path), log=_QUIET)
  assert 'BatchNorm' in str(error.value) and 'Fix: ' in str(error.value)
  assert not os.path.exists(tmp_path / ledger.FILENAME)


@pytest.fixture(scope='module')
def finished(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('finished')
  train_and_evaluate(_config(), str(workdir), log=_QUIET)
  return workdir


def _newest(workdir):
  return os.path.join(workdir, checkpointing.DIRNAME, '2')


@pytest.mark.parametrize('damage', ['meta', 'state', 'ledger', 'torn ledger'])
def test_a_corrupt_checkpoint_or_ledger_is_refused_and_left_alone(
    finished, tmp_path, damage):
  workdir = tmp_path / 'copy'
  shutil.copytree(finished, workdir)
  if damage == 'meta':
    with open(os.path.join(_newest(workdir), 'meta', 'metadata'), 'w') as f:
      f.write('{"format": 1, "trunc')
  elif damage == 'state':
    shutil.rmtree(os.path.join(_newest(workdir), 'state', 'd'))
    for name in os.listdir(os.path.join(_newest(workdir), 'state')):
      if name.startswith('ocdbt'):
        shutil.rmtree(os.path.join(_newest(workdir), 'state', name))
  elif damage == 'ledger':
    path = workdir / ledger.FILENAME
    path.write_text(path.read_text().replace('"count":2', '"count":1'))
  else:  # A write cut short: the last line lacks its end.
    path = workdir / ledger.FILENAME
    path.write_text(path.read_text() + '{"data":{"executed":')
  before = sorted(os.listdir(workdir))
  ledger_text = (workdir / ledger.FILENAME).read_text()
  with pytest.raises(ConfigError) as error:
    train_and_evaluate(_config(), str(workdir), log=_QUIET)
  assert error.value.field == ('checkpoint' if damage in ('meta', 'state')
                               else 'ledger')
  if damage == 'torn ledger':
    assert 'incomplete' in str(error.value)
  assert 'Fix: ' in str(error.value)
  assert sorted(os.listdir(workdir)) == before
  assert (workdir / ledger.FILENAME).read_text() == ledger_text


def test_a_workdir_in_use_is_refused(tmp_path):
  with open(tmp_path / '.lock', 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # Another run holds it.
    with pytest.raises(ConfigError) as error:
      train_and_evaluate(_config(), str(tmp_path), log=_QUIET)
  assert error.value.field == 'workdir' and 'another run' in str(error.value)

"""Data: original-file readers, TFDS without TensorFlow, clear errors."""

import os

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from jaxdp import data
from jaxdp.data import local_files
from jaxdp.data import stand_in_files
from jaxdp.errors import ConfigError


def _data_config(name, data_dir='', source='auto', features='pixels'):
  return ml_collections.ConfigDict({'name': name, 'data_dir': str(data_dir),
                                    'source': source, 'features': features})


@pytest.mark.parametrize('gz', [True, False])
def test_idx_files_are_read_exactly(tmp_path, gz):
  arrays = stand_in_files.write_stand_in('mnist', str(tmp_path), 6, 4, gz=gz)
  dataset = data.load_dataset(_data_config('mnist', tmp_path))  # Parent dir.
  assert dataset.train_images.shape == (6, 28, 28, 1)
  np.testing.assert_allclose(
      dataset.train_images[..., 0] * 255.0,
      arrays['train-images-idx3-ubyte'], atol=1e-3)
  np.testing.assert_array_equal(dataset.test_labels,
                                arrays['t10k-labels-idx1-ubyte'])
  same = data.load_dataset(_data_config('mnist', tmp_path / 'mnist', 'files'))
  np.testing.assert_array_equal(same.train_labels, dataset.train_labels)


def test_truncated_idx_file_is_rejected(tmp_path):
  path = tmp_path / 'bad-idx'
  stand_in_files.write_idx(str(path), np.zeros((3, 4, 4)), gz=False)
  with open(path, 'ab') as f:
    f.write(b'\x00')
  with pytest.raises(ValueError, match='header says'):
    local_files.read_idx(str(path))


def test_cifar10_npz_is_read_and_standardised_with_public_constants(tmp_path):
  rng = np.random.default_rng(0)
  x_train = rng.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
  np.savez(tmp_path / 'cifar10.npz', x_train=x_train,
           y_train=np.arange(5), x_test=x_train[:2], y_test=np.arange(2))
  dataset = data.load_dataset(_data_config('cifar10', tmp_path))
  mean = np.array(local_files.CIFAR10_MEAN)
  std = np.array(local_files.CIFAR10_STD)
  np.testing.assert_allclose(dataset.train_images * std + mean,
                             x_train / 255.0, atol=1e-5)
  assert dataset.train_labels.tolist() == [0, 1, 2, 3, 4]


def test_digits_ship_offline_with_a_fixed_split():
  dataset = data.load_dataset(_data_config('digits'))
  assert (dataset.num_train, len(dataset.test_labels)) == (1437, 360)
  assert dataset.train_images.shape[1:] == (8, 8, 1)
  assert 0.0 <= dataset.train_images.min() and dataset.train_images.max() <= 1
  again = data.load_dataset(_data_config('digits'))
  assert dataset.fingerprint() == again.fingerprint()


def test_tfds_path_loads_through_data_source_under_mock_data():
  with tfds.testing.mock_data(num_examples=12):
    dataset = data.load_dataset(_data_config('mnist', source='tfds'))
  assert dataset.num_train == 12 and dataset.num_classes == 10
  assert dataset.train_images.shape == (12, 28, 28, 1)
  assert dataset.source.startswith('tfds')


def test_missing_dataset_says_how_to_get_it(tmp_path):
  with pytest.raises(ConfigError) as info:
    data.load_dataset(_data_config('fashion_mnist', tmp_path))
  message = str(info.value)
  assert info.value.field == 'data.data_dir'
  assert 'tfds build fashion_mnist' in message
  assert 'originally published files' in message
  with pytest.raises(ConfigError, match='no original mnist files'):
    data.load_dataset(_data_config('mnist', tmp_path, 'files'))


def test_unknown_source_is_refused():
  with pytest.raises(ConfigError, match='data.source'):
    data.load_dataset(_data_config('mnist', source='http'))


_REAL = os.environ.get('JAXDP_DATA_DIR', '')


@pytest.mark.skipif(not _REAL, reason='set JAXDP_DATA_DIR to a folder with '
                    'the original mnist/ and fashion_mnist/ files')
@pytest.mark.parametrize('name', ['mnist', 'fashion_mnist'])
def test_real_idx_files(name):
  dataset = data.load_dataset(_data_config(name, _REAL, 'files'))
  assert (dataset.num_train, len(dataset.test_labels)) == (60_000, 10_000)
  assert np.bincount(dataset.train_labels).min() > 5000
  assert 0.1 < dataset.train_images.mean() < 0.35

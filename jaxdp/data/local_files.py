"""Readers for datasets kept as their originally published files.

* MNIST and Fashion-MNIST: the four IDX files (`train-images-idx3-ubyte`,
  `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte`,
  `t10k-labels-idx1-ubyte`), gzipped or not, exactly as distributed.
* CIFAR-10: either the "python version" folder `cifar-10-batches-py/`
  (`data_batch_1..5`, `test_batch`) or one `cifar10.npz` holding `x_train`
  [50000, 32, 32, 3] uint8, `y_train`, `x_test`, `y_test`.

`find_files` looks in `data_dir` and in `data_dir/<name>`, so one directory
holding `mnist/`, `fashion_mnist/` and `cifar10/` serves all three.
"""

import gzip
import os
import pickle
from typing import Optional

import numpy as np

from jaxdp.data.dataset import Dataset
from jaxdp.data.dataset import to_model_scale

IDX_DATASETS = ('mnist', 'fashion_mnist')
_IDX_FILES = ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte',
              't10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte')
# Published per-channel mean and std of the CIFAR-10 training set (public
# constants used throughout the literature, not recomputed from private data).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


def read_idx(path: str) -> np.ndarray:
  """Reads one IDX file (optionally gzipped) into a uint8 array."""
  opener = gzip.open if path.endswith('.gz') else open
  with opener(path, 'rb') as f:
    data = f.read()
  if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
    raise ValueError(f'{path} is not an unsigned-byte IDX file')
  ndim = data[3]
  dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], 'big')
          for i in range(ndim)]
  header = 4 + 4 * ndim
  expected = header + int(np.prod(dims))
  if len(data) != expected:
    raise ValueError(
        f'{path} holds {len(data)} bytes, its header says {expected}')
  return np.frombuffer(data, np.uint8, offset=header).reshape(dims)


def _find(directory: str, stem: str) -> Optional[str]:
  for candidate in (stem + '.gz', stem):
    path = os.path.join(directory, candidate)
    if os.path.isfile(path):
      return path
  return None


def find_files(name: str, data_dir: str) -> Optional[str]:
  """The directory holding `name`'s original files, or None."""
  if not data_dir:
    return None
  for directory in (os.path.join(data_dir, name), data_dir):
    if name in IDX_DATASETS:
      if all(_find(directory, stem) for stem in _IDX_FILES):
        return directory
    elif name == 'cifar10':
      if (os.path.isfile(os.path.join(directory, 'cifar10.npz')) or
          os.path.isdir(os.path.join(directory, 'cifar-10-batches-py'))):
        return directory
  return None


def load_idx_dataset(name: str, directory: str) -> Dataset:
  """MNIST or Fashion-MNIST from its four IDX files in `directory`."""
  arrays = [read_idx(_find(directory, stem)) for stem in _IDX_FILES]
  train_x, train_y, test_x, test_y = arrays
  return Dataset(
      name=name, source=f'IDX files in {directory}',
      train_images=to_model_scale(train_x, 255.0),
      train_labels=train_y.astype(np.int32),
      test_images=to_model_scale(test_x, 255.0),
      test_labels=test_y.astype(np.int32),
      num_classes=10)


def _read_cifar_batches(folder: str):
  def read(name):
    with open(os.path.join(folder, name), 'rb') as f:
      batch = pickle.load(f, encoding='bytes')
    images = batch[b'data'].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return images, np.asarray(batch[b'labels'])
  train = [read(f'data_batch_{i}') for i in range(1, 6)]
  test_x, test_y = read('test_batch')
  return (np.concatenate([x for x, _ in train]),
          np.concatenate([y for _, y in train]), test_x, test_y)


def load_cifar10(directory: str) -> Dataset:
  """CIFAR-10 from `cifar10.npz` or `cifar-10-batches-py/` in `directory`."""
  npz = os.path.join(directory, 'cifar10.npz')
  if os.path.isfile(npz):
    with np.load(npz) as f:
      train_x, train_y, test_x, test_y = (f['x_train'], f['y_train'],
                                          f['x_test'], f['y_test'])
    source = f'cifar10.npz in {directory}'
  else:
    folder = os.path.join(directory, 'cifar-10-batches-py')
    train_x, train_y, test_x, test_y = _read_cifar_batches(folder)
    source = f'cifar-10-batches-py in {directory}'
  scale = lambda x: to_model_scale(x, 255.0, CIFAR10_MEAN, CIFAR10_STD)
  return Dataset(
      name='cifar10', source=source,
      train_images=scale(train_x), train_labels=train_y.astype(np.int32),
      test_images=scale(test_x), test_labels=test_y.astype(np.int32),
      num_classes=10)

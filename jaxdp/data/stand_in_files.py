"""Random data written in the published file formats.

`--quick` runs of the paper tables, and tests, need MNIST-, Fashion-MNIST- and
CIFAR-10-shaped data without the real files. Writing stand-ins in the real
formats (gzipped IDX; `cifar10.npz`) sends them through the same readers as
the real data, so a quick run exercises the whole path a real run takes.
"""

import gzip
import os

import numpy as np

from jaxdp.data import local_files


def write_idx(path: str, array: np.ndarray, gz: bool = True) -> str:
  """Writes `array` (values 0–255) as an unsigned-byte IDX file; its path."""
  header = bytes([0, 0, 0x08, array.ndim]) + b''.join(
      int(d).to_bytes(4, 'big') for d in array.shape)
  payload = header + array.astype(np.uint8).tobytes()
  path = path + ('.gz' if gz else '')
  with (gzip.open if gz else open)(path, 'wb') as f:
    f.write(payload)
  return path


def write_stand_in(name: str, folder: str, num_train: int, num_test: int,
                   seed: int = 0, gz: bool = True) -> dict:
  """Random images and labels as `name`'s files in `folder/name`.

  IDX files are gzipped unless `gz` is False (both forms are published).

  Returns the arrays written, by file (IDX) or by npz key (CIFAR-10).
  """
  rng = np.random.default_rng(seed)
  directory = os.path.join(folder, name)
  os.makedirs(directory, exist_ok=True)
  if name in local_files.IDX_DATASETS:
    arrays = {
        'train-images-idx3-ubyte': rng.integers(0, 256, (num_train, 28, 28)),
        'train-labels-idx1-ubyte': rng.integers(0, 10, num_train),
        't10k-images-idx3-ubyte': rng.integers(0, 256, (num_test, 28, 28)),
        't10k-labels-idx1-ubyte': rng.integers(0, 10, num_test),
    }
    for stem, array in arrays.items():
      write_idx(os.path.join(directory, stem), array, gz)
    return arrays
  if name == 'cifar10':
    arrays = {
        'x_train': rng.integers(0, 256, (num_train, 32, 32, 3), np.uint8),
        'y_train': rng.integers(0, 10, num_train),
        'x_test': rng.integers(0, 256, (num_test, 32, 32, 3), np.uint8),
        'y_test': rng.integers(0, 10, num_test),
    }
    np.savez(os.path.join(directory, 'cifar10.npz'), **arrays)
    return arrays
  raise ValueError(f'no file format known for {name!r}')

"""Datasets by name, from the source the config asks for.

`data.source`:
* `auto` (default): `digits` from scikit-learn; `mnist`, `fashion_mnist`,
  `cifar10` from their original files if `data.data_dir` holds them, else from
  a prepared TFDS directory; any other name from TFDS.
* `files`: only the original files in `data.data_dir`.
* `tfds`: only `tfds.data_source` over a prepared `data.data_dir`.

`data.features`: `pixels` (default) keeps the images; `scattering` replaces
every image by its scattering coefficients (J = 2, L = 8; see
`scattering.py`), a fixed per-example feature map that costs no privacy.
"""

import dataclasses

from jaxdp.data.dataset import Dataset
from jaxdp.data.digits import load_digits
from jaxdp.data import local_files
from jaxdp.data import scattering
from jaxdp.data.tfds_source import load_tfds
from jaxdp.errors import ConfigError
from jaxdp.errors import MissingDataError

SOURCES = ('auto', 'files', 'tfds')
FEATURES = ('pixels', 'scattering')


def load_dataset(data_config) -> Dataset:
  """Loads `data_config.name` into memory (never downloads), as features."""
  if data_config.features not in FEATURES:
    raise ConfigError('data.features',
                      f'unknown features {data_config.features!r}',
                      f'use one of {", ".join(FEATURES)}')
  dataset = _load_images(data_config)
  if data_config.features == 'pixels':
    return dataset
  for split in ('train', 'test'):
    height, width = getattr(dataset, f'{split}_images').shape[1:3]
    if height % 4 or width % 4:
      raise ConfigError(
          'data.features', f'scattering needs images whose sides are '
          f'multiples of 4, {dataset.name} has {height}x{width}',
          'use data.features=pixels for this dataset')
  return dataclasses.replace(
      dataset, source=f'{dataset.source}, scattering J=2 L=8',
      train_images=scattering.scatter_dataset(dataset.train_images),
      test_images=scattering.scatter_dataset(dataset.test_images))


def _load_images(data_config) -> Dataset:
  name, data_dir, source = (data_config.name, data_config.data_dir,
                            data_config.source)
  if source not in SOURCES:
    raise ConfigError('data.source', f'unknown source {source!r}',
                      f'use one of {", ".join(SOURCES)}')
  if name == 'digits':
    return load_digits()
  has_files = name in local_files.IDX_DATASETS + ('cifar10',)
  if source in ('auto', 'files') and has_files:
    directory = local_files.find_files(name, data_dir)
    if directory is not None:
      if name == 'cifar10':
        return local_files.load_cifar10(directory)
      return local_files.load_idx_dataset(name, directory)
    if source == 'files':
      raise MissingDataError(
          'data.data_dir',
          f'no original {name} files in {data_dir!r} or {data_dir!r}/{name}',
          'point data.data_dir at the folder holding the published files '
          '(IDX files for mnist/fashion_mnist; cifar10.npz or '
          'cifar-10-batches-py/ for cifar10)')
  if source == 'files':
    raise ConfigError('data.source', f'no file reader for {name!r}',
                      'use data.source=tfds or auto')
  return load_tfds(name, data_dir)


__all__ = ['Dataset', 'load_dataset', 'SOURCES', 'FEATURES']

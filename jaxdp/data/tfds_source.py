"""Any TensorFlow Datasets image-classification dataset, without TensorFlow.

Reads prepared datasets through `tfds.data_source`, which uses array_record
files and needs no TensorFlow. Nothing is downloaded at run time: a dataset
that is not prepared in `data_dir` raises an error that says how to prepare it.
"""

import numpy as np

from jaxdp.data.dataset import Dataset
from jaxdp.data.dataset import to_model_scale
from jaxdp.errors import ConfigError
from jaxdp.errors import MissingDataError


def _prepare_hint(name: str, data_dir: str) -> str:
  where = f' --data_dir={data_dir}' if data_dir else ''
  return (
      'prepare it once on a machine with network access: `pip install '
      f'tensorflow-cpu && tfds build {name} --file_format=array_record{where}`'
      ' and copy the folder here, then set data.data_dir; for mnist, '
      'fashion_mnist and cifar10 you can instead point data.data_dir at the '
      'originally published files')


def _to_arrays(source, image_key: str, label_key: str):
  examples = [source[i] for i in range(len(source))]
  images = np.stack([np.asarray(e[image_key]) for e in examples])
  labels = np.asarray([e[label_key] for e in examples], np.int32)
  return images, labels


def load_tfds(name: str, data_dir: str, train_split: str = 'train',
              test_split: str = 'test', image_key: str = 'image',
              label_key: str = 'label') -> Dataset:
  """Loads `name` from a prepared TFDS directory into memory."""
  import tensorflow_datasets as tfds  # Heavy import: only on this path.
  try:
    builder = tfds.builder(name, data_dir=data_dir or None)
  except Exception as e:  # tfds raises DatasetNotFoundError and others.
    raise ConfigError('data.name', f'TFDS has no dataset {name!r} ({e})',
                      'check the name against the TFDS catalogue') from e
  try:
    train = tfds.data_source(name, split=train_split,
                             data_dir=data_dir or None, download=False)
    test = tfds.data_source(name, split=test_split,
                            data_dir=data_dir or None, download=False)
  except Exception as e:
    raise MissingDataError(
        'data.data_dir',
        f'dataset {name!r} is not prepared (as array_record) in '
        f'{data_dir or "the default TFDS directory"} ({type(e).__name__})',
        _prepare_hint(name, data_dir)) from e
  train_x, train_y = _to_arrays(train, image_key, label_key)
  test_x, test_y = _to_arrays(test, image_key, label_key)
  num_classes = builder.info.features[label_key].num_classes
  return Dataset(
      name=name, source=f'tfds data_source ({data_dir or "default dir"})',
      train_images=to_model_scale(train_x, 255.0), train_labels=train_y,
      test_images=to_model_scale(test_x, 255.0), test_labels=test_y,
      num_classes=int(num_classes))

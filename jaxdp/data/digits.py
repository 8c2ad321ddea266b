"""scikit-learn's 8×8 handwritten digits: real data that ships with a package.

1,797 images of 8×8 pixels (values 0–16), 10 classes, from the UCI "Optical
Recognition of Handwritten Digits" test set (Alpaydin & Kaynak 1998) as
bundled in `sklearn.datasets.load_digits`. Being inside an installed package,
it needs no download, which is why the default experiment uses it.

The split is fixed and public: a permutation from seed 0, the last 20% (360
images) held out for testing.
"""

import numpy as np

from jaxdp.data.dataset import Dataset
from jaxdp.data.dataset import to_model_scale

_NUM_TEST = 360


def load_digits() -> Dataset:
  from sklearn import datasets  # Imported here: only this dataset needs it.
  bunch = datasets.load_digits()
  images = bunch.images.astype(np.float32)  # [1797, 8, 8], values 0..16.
  labels = bunch.target.astype(np.int32)
  order = np.random.default_rng(0).permutation(len(labels))
  images, labels = images[order], labels[order]
  images = to_model_scale(images, max_value=16.0)
  return Dataset(
      name='digits',
      source='scikit-learn load_digits (UCI optdigits, bundled offline)',
      train_images=images[:-_NUM_TEST], train_labels=labels[:-_NUM_TEST],
      test_images=images[-_NUM_TEST:], test_labels=labels[-_NUM_TEST:],
      num_classes=10)

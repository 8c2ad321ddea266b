"""An in-memory image-classification dataset with a fixed train/test split."""

import dataclasses
import hashlib

import numpy as np


@dataclasses.dataclass(frozen=True)
class Dataset:
  """Images as float32 [n, H, W, C] in model-ready scale, labels as int32 [n]."""

  name: str
  source: str  # Where the data came from, in words (reported with results).
  train_images: np.ndarray
  train_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray
  num_classes: int

  def __post_init__(self):
    for split in ('train', 'test'):
      images = getattr(self, f'{split}_images')
      labels = getattr(self, f'{split}_labels')
      if images.ndim != 4 or len(images) != len(labels):
        raise ValueError(
            f'{self.name} {split}: images {images.shape} and labels '
            f'{labels.shape} do not form an [n, H, W, C] / [n] pair')

  @property
  def num_train(self) -> int:
    return len(self.train_labels)

  def fingerprint(self) -> str:
    """SHA-256 over the training split (identifies the private data)."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(self.train_images).tobytes())
    digest.update(np.ascontiguousarray(self.train_labels).tobytes())
    return digest.hexdigest()


def to_model_scale(images: np.ndarray, max_value: float,
                   mean=None, std=None) -> np.ndarray:
  """uint8-like images -> float32 in [0, 1], optionally standardised.

  `mean` and `std` must be public constants (published per-channel values),
  never statistics of the private training set, which would leak.
  """
  images = images.astype(np.float32) / max_value
  if images.ndim == 3:
    images = images[..., None]
  if mean is not None:
    images = (images - np.asarray(mean, np.float32)) / np.asarray(std,
                                                                  np.float32)
  return images

"""Canaries: examples an auditor adds to the training set to test for leaks.

Three kinds (`CANARY_KINDS`):

* ``gradient`` (white-box): canary i's gradient is a fixed direction, the
  i-th coordinate of a probe layer that no real example touches (a "Dirac"
  canary, Nasr et al. 2023), of norm `GRADIENT_NORM_IN_CLIPS` × C, so a
  correct mechanism clips it to exactly C. The auditor reads the privatised
  gradient of every step, which DP-SGD's accounting covers.
* ``mislabelled`` (black-box): held-out images with a wrong label (the next
  class). A model that memorises them predicts that label.
* ``ood`` (black-box): uniformly random images with random labels.

Membership: each canary is present independently with probability ½
(`draw_presence`), which is what the one-run bound assumes.
"""

import dataclasses

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import optax

from jaxdp import streams
from jaxdp.data.dataset import Dataset
from jaxdp.errors import ConfigError

CANARY_KINDS = ('gradient', 'mislabelled', 'ood')

# Gradient canaries' norm before clipping, in units of the clipping norm C:
# clipped to C by a correct mechanism, 10× larger if clipping is skipped.
GRADIENT_NORM_IN_CLIPS = 10.0



@dataclasses.dataclass(frozen=True)
class Canaries:
  kind: str
  images: np.ndarray  # [m, H, W, C]; zeros for gradient canaries.
  labels: np.ndarray  # int32 [m]; the label each is trained with.
  # Held-out images not used as canaries (the rest of the test split).
  test_images: np.ndarray
  test_labels: np.ndarray

  @property
  def count(self) -> int:
    return len(self.labels)

  @property
  def white_box(self) -> bool:
    return self.kind == 'gradient'


def make(kind: str, count: int, dataset: Dataset, seed: int) -> Canaries:
  """`count` canaries of `kind` for `dataset`, drawn from `seed`."""
  if kind not in CANARY_KINDS:
    raise ConfigError('--canary_type', f'unknown canary type {kind!r}',
                      f'use one of {", ".join(CANARY_KINDS)}')
  if not count >= 1:
    raise ConfigError('--canaries', f'must be >= 1, got {count}',
                      'insert at least one canary (hundreds for a one-run '
                      'audit)')
  rng = np.random.default_rng([seed, streams.CANARY_STREAM])
  shape = dataset.train_images.shape[1:]
  test_images, test_labels = dataset.test_images, dataset.test_labels
  if kind == 'gradient':
    images = np.zeros((count, *shape), np.float32)
    labels = np.zeros(count, np.int32)
  elif kind == 'ood':
    low, high = dataset.train_images.min(), dataset.train_images.max()
    images = rng.uniform(low, high, (count, *shape)).astype(np.float32)
    labels = rng.integers(0, dataset.num_classes, count).astype(np.int32)
  else:
    if count > len(test_labels):
      raise ConfigError(
          '--canaries', f'{count} mislabelled canaries, but {dataset.name} '
          f'has only {len(test_labels)} held-out images to make them from',
          f'use at most {len(test_labels)}, or --canary_type=ood or gradient')
    order = rng.permutation(len(test_labels))
    chosen, rest = order[:count], order[count:]
    images = test_images[chosen]
    labels = ((test_labels[chosen] + 1) % dataset.num_classes).astype(np.int32)
    test_images, test_labels = test_images[rest], test_labels[rest]
  return Canaries(kind, images, labels, test_images, test_labels)


def draw_presence(count: int, seed: int) -> np.ndarray:
  """bool [count]: each canary present independently with probability ½."""
  rng = np.random.default_rng([seed, streams.PRESENCE_STREAM])
  return rng.random(count) < 0.5


class Probed(nn.Module):
  """`model` plus `canary_probe`, a bias-free Dense on a one-hot canary id.

  Real examples and input-space canaries feed zeros to the probe, so their
  gradient there is exactly zero; gradient canary i feeds e_i.
  """

  model: nn.Module

  @nn.compact
  def __call__(self, images, canary_ids):
    probe = nn.Dense(1, use_bias=False, kernel_init=nn.initializers.zeros,
                     name='canary_probe')(canary_ids)
    return self.model(images), probe[:, 0]


def probed_loss(module: Probed, clip_norm: float):
  """Per-example loss of (images, labels, canary one-hot, is gradient canary).

  Real and input-space rows: cross-entropy. Gradient canary rows: the probe's
  output times GRADIENT_NORM_IN_CLIPS·C, whose gradient is that multiple of
  e_i on the probe and zero elsewhere.
  """
  scale = GRADIENT_NORM_IN_CLIPS * clip_norm

  def loss(params, batch):
    images, labels, canary_ids, gradient_canary = batch
    logits, probe = module.apply({'params': params}, images, canary_ids)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return jnp.where(gradient_canary, scale * probe, ce)
  return loss

"""The image-classification task: a `data.Dataset` and a `models` network."""

import hashlib

import jax.numpy as jnp
import numpy as np

from jaxdp.tasks import augmentation
from jaxdp import data
from jaxdp import models
from jaxdp import private_releases
from jaxdp.train import step as steps
from jaxdp.tasks.base import Task


def _digest(dataset: data.Dataset) -> int:
  digest = hashlib.sha256(dataset.fingerprint().encode())
  for array in (dataset.test_images, dataset.test_labels):
    digest.update(memoryview(np.ascontiguousarray(array)).cast('B'))
  return int(digest.hexdigest()[:32], 16)


def from_dataset(config, dataset: data.Dataset, model) -> Task:
  """The task for `dataset` (already loaded, features and releases applied)."""
  sample_input = jnp.asarray(dataset.train_images[:1])
  models.check_no_example_mixing(model, sample_input)
  augmult = config.data.augmult or None

  def train_inputs(indices, mask, slots, execution):
    images = dataset.train_images[indices]
    labels = dataset.train_labels[indices]
    images[~mask] = 0.0
    labels[~mask] = 0
    if augmult is None:
      return (images, labels)
    # Each slot's (execution, slot) id keys its augmented views.
    ids = np.stack([np.full(len(indices), execution), slots], axis=1)
    return (images, labels, ids.astype(np.int32))

  eval_step = steps.make_eval_step(model.apply)
  eval_batch = min(config.eval.batch_size, len(dataset.test_labels))

  def evaluate(params, placement):
    return steps.evaluate(eval_step, params, dataset.test_images,
                          dataset.test_labels, eval_batch, placement)

  return Task(
      name=dataset.name, source=dataset.source, num_train=dataset.num_train,
      num_test=len(dataset.test_labels), model=model,
      init=lambda key: (model.init(key, sample_input)['params'], None),
      batch_loss=(steps.classification_loss(model.apply) if augmult is None
                  else augmentation.classification_loss(model.apply, augmult,
                                                        config.seed)),
      train_inputs=train_inputs, evaluate=evaluate,
      fingerprint=dataset.fingerprint, digest=lambda: _digest(dataset),
      with_releases=lambda dp, seed: from_dataset(
          config, private_releases.apply(dp, dataset, seed), model))


def build(config) -> Task:
  """Loads `config.data` and builds `config.model` for it."""
  dataset = data.load_dataset(config.data)
  return from_dataset(config, dataset,
                      models.build_model(config.model, dataset.num_classes))

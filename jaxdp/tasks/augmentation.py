"""Augmentation multiplicity (De et al. 2022): each example's loss is the mean
over K random views of it, so its gradient is the mean of the K views'
gradients, and that mean is what gets clipped.

Clipping after averaging keeps one example's influence bounded by C, however
many views it has: the K views are not K examples. Views are horizontal flips
(probability 1/2) and random crops of the image reflect-padded by 4 pixels,
as in De et al. Their randomness comes from the config seed, the execution
index and the batch slot, so a resumed run sees the same views. It needs no
secrecy: the guarantee holds for any fixed choice of views.

On the fast clipping path the model sees n·K rows for n examples, so no layer
qualifies as applied per example and every parameter is clipped through
exact per-example gradients (`vmap`).
"""

import jax
import jax.numpy as jnp
import optax

from jaxdp import streams

PADDING = 4


def flip_and_crop(key: jax.Array, image: jax.Array) -> jax.Array:
  """One random view of an [H, W, C] image."""
  flip_key, crop_key = jax.random.split(key)
  height, width, channels = image.shape
  image = jnp.where(jax.random.bernoulli(flip_key), image[:, ::-1], image)
  pad = ((PADDING, PADDING), (PADDING, PADDING), (0, 0))
  padded = jnp.pad(image, pad, mode='reflect')
  dy, dx = jax.random.randint(crop_key, (2,), 0, 2 * PADDING + 1)
  return jax.lax.dynamic_slice(padded, (dy, dx, 0), (height, width, channels))


def views(seed: int, ids: jax.Array, images: jax.Array, k: int) -> jax.Array:
  """[n, H, W, C] -> [n, k, H, W, C]; `ids` [n, 2] = (execution, slot)."""
  base = jax.random.fold_in(jax.random.key(seed), streams.AUGMENT_STREAM)

  def per_example(example_id, image):
    key = jax.random.fold_in(jax.random.fold_in(base, example_id[0]),
                             example_id[1])
    return jax.vmap(lambda kk: flip_and_crop(kk, image))(
        jax.random.split(key, k))
  return jax.vmap(per_example)(ids, images)


def classification_loss(apply_fn, k: int, seed: int):
  """Per-example cross-entropy averaged over k views: loss(params, (images,
  labels, ids)) -> [n]."""
  def loss(params, batch):
    images, labels, ids = batch
    n = images.shape[0]
    many = views(seed, ids, images, k).reshape((n * k,) + images.shape[1:])
    logits = apply_fn({'params': params}, many)
    losses = optax.softmax_cross_entropy_with_integer_labels(
        logits, jnp.repeat(labels, k))
    return losses.reshape(n, k).mean(axis=1)
  return loss

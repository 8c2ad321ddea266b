"""The jitted training and evaluation steps.

`make_train_step` knows nothing of the algorithm: it computes the mechanism's
clipped sum and hands it to the optax chain, whose first link adds the noise.
"""

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from jaxdp.mechanism import DpMechanism
from jaxdp.train_state import TrainState


def classification_loss(apply_fn: Callable) -> Callable:
  """Per-example cross-entropy: loss(params, (images, labels)) -> [n]."""
  def loss(params, batch):
    images, labels = batch
    logits = apply_fn({'params': params}, images)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  return loss


def make_train_step(batch_loss: Callable, mechanism: DpMechanism,
                    tx: optax.GradientTransformation):
  """train_step(state, batch) -> (state, metrics), jitted, state donated.

  `batch` is a dict with `inputs` (what `batch_loss(params, inputs) -> [P]`
  takes, leading axis P) and `mask` [P] (False for padding), P the padded
  batch size.
  """
  clipped_grad_sum = mechanism.clipped_grad_sum(batch_loss)
  clip_norm = mechanism.clip_norm

  def train_step(state: TrainState, batch):
    grad_sum, stats = clipped_grad_sum(state.params, batch['inputs'],
                                       batch['mask'])
    updates, opt_state = tx.update(grad_sum, state.opt_state, state.params)
    updates = jax.tree_util.tree_map(
        lambda u: (u * state.lr_scale).astype(u.dtype), updates)
    params = optax.apply_updates(state.params, updates)
    real = jnp.maximum(batch['mask'].sum(), 1)
    # Diagnostics of the private batch: useful for debugging, but not covered
    # by the DP guarantee. Never use them to steer training.
    metrics = {
        'batch_loss': stats.losses.sum() / real,
        'clipped_fraction': jnp.sum(batch['mask'] & (stats.norms > clip_norm))
                            / real,
        'dropped_nonfinite': stats.dropped.sum(),
    }
    new_state = state.replace(step=state.step + 1, params=params,
                              opt_state=opt_state)
    return new_state, metrics

  return jax.jit(train_step, donate_argnums=0)


def make_eval_step(apply_fn: Callable):
  """eval_step(params, images, labels, mask) -> (loss sum, correct count)."""
  def eval_step(params, images, labels, mask):
    logits = apply_fn({'params': params}, images)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    correct = jnp.argmax(logits, -1) == labels
    return jnp.sum(jnp.where(mask, losses, 0.0)), jnp.sum(correct & mask)
  return jax.jit(eval_step)


def evaluate(eval_step, params, images, labels, batch_size: int):
  """Mean loss and accuracy over a whole split, in fixed-size batches."""
  total_loss, total_correct, n = 0.0, 0, len(labels)
  for start in range(0, n, batch_size):
    x, y = images[start:start + batch_size], labels[start:start + batch_size]
    pad = batch_size - len(y)
    mask = jnp.arange(batch_size) < len(y)
    if pad:
      x = jnp.concatenate([x, jnp.zeros((pad,) + x.shape[1:], x.dtype)])
      y = jnp.concatenate([y, jnp.zeros((pad,), y.dtype)])
    loss, correct = eval_step(params, x, y, mask)
    total_loss += float(loss)
    total_correct += int(correct)
  return total_loss / n, total_correct / n

"""The jitted training and evaluation steps.

`make_train_step` knows nothing of the algorithm: it computes the mechanism's
clipped sum and hands it to the optax chain, whose first link adds the noise.
On several devices the clipped sum is computed data-parallel and added across
devices first (`jaxdp.sharding`); the chain, and so the noise, runs once, on
the global sum.
"""

from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdp.mechanism import DpMechanism
from jaxdp.models import lora
from jaxdp.sharding import Placement
from jaxdp.sharding import make_mesh
from jaxdp.train.state import TrainState


def classification_loss(apply_fn: Callable) -> Callable:
  """Per-example cross-entropy: loss(params, (images, labels)) -> [n]."""
  def loss(params, batch):
    images, labels = batch
    logits = apply_fn({'params': params}, images)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  return loss


def ema_decay_at(decay: float, step: jax.Array) -> jax.Array:
  """The EMA's decay after `step` updates: min(decay, (1 + t) / (10 + t)).

  The warm-up keeps early averages from being dominated by the
  initialisation (the usual schedule of TensorFlow's moving averages).
  """
  t = step.astype(jnp.float32)
  return jnp.minimum(decay, (1.0 + t) / (10.0 + t))


def make_train_step(batch_loss: Callable, mechanism: DpMechanism,
                    tx: optax.GradientTransformation,
                    placement: Optional[Placement] = None,
                    state: Optional[TrainState] = None,
                    ema_decay: float = 0.0):
  """train_step(state, batch, frozen=None) -> (state, metrics), jitted.

  `batch` is a dict with `inputs` (what `batch_loss(params, inputs) -> [P]`
  takes, leading axis P) and `mask` [P] (False for padding), P the padded
  batch size, split over `placement`'s devices (default: the first device).
  `state` (placed with `placement.put_state`) fixes the shardings the step
  keeps its output in, so that the next step's input is laid out the same and
  nothing recompiles; without it XLA chooses them. If `state.ema_params` is
  set, it is moved towards the new parameters with `ema_decay_at(ema_decay)`.
  The state is donated. `frozen` (parameters not trained, e.g. a pretrained
  model under LoRA adapters) is merged into `state.params` for the loss; it
  is an argument of the compiled step, not a constant inside it.
  """
  placement = placement or Placement(make_mesh(1))

  def clipped_sum(params, frozen_params, inputs, mask, clip_norm):
    loss = lora.with_frozen(batch_loss, frozen_params)
    return mechanism.clipped_grad_sum(loss, clip_norm)(params, inputs, mask)

  global_sum = placement.global_clipped_sum(clipped_sum)
  link = mechanism.link

  def train_step(state: TrainState, batch, frozen=None):
    # A link may own C (adaptive clipping's C_t, public: a function of
    # earlier noisy releases); otherwise the mechanism's constant.
    clip_norm = link.clip_norm(state.opt_state)
    grad_sum, stats = global_sum(state.params, frozen, batch['inputs'],
                                 batch['mask'], clip_norm)
    if clip_norm is None:
      clip_norm = mechanism.clip_norm
    # What the link's update needs besides the sum (e.g. a count it noises).
    updates, opt_state = tx.update(grad_sum, state.opt_state, state.params,
                                   **link.step_inputs(batch['mask'], stats))
    updates = jax.tree_util.tree_map(
        lambda u: (u * state.lr_scale).astype(u.dtype), updates)
    params = optax.apply_updates(state.params, updates)
    real = jnp.maximum(batch['mask'].sum(), 1)
    # Diagnostics of the private batch: useful for debugging, but not covered
    # by the DP guarantee. Never use them to steer training.
    metrics = {
        'batch_loss': stats.losses.sum() / real,
        'clipped_fraction': jnp.sum(stats.clipped) / real,
        'dropped_nonfinite': stats.dropped.sum(),
        'clip_norm': jnp.asarray(clip_norm, jnp.float32),
    }
    ema = state.ema_params
    if ema is not None:
      d = ema_decay_at(ema_decay, state.step + 1)
      ema = jax.tree_util.tree_map(
          lambda e, p: (d * e + (1 - d) * p).astype(e.dtype), ema, params)
    new_state = state.replace(step=state.step + 1, params=params,
                              opt_state=opt_state, ema_params=ema)
    return new_state, metrics

  if state is None:
    return jax.jit(train_step, donate_argnums=0)
  return jax.jit(train_step, donate_argnums=0,
                 out_shardings=(placement.state_shardings(state),
                                placement.replicated))


def make_eval_step(apply_fn: Callable):
  """eval_step(params, images, labels, mask) -> (loss sum, correct count)."""
  def eval_step(params, images, labels, mask):
    logits = apply_fn({'params': params}, images)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    correct = jnp.argmax(logits, -1) == labels
    return jnp.sum(jnp.where(mask, losses, 0.0)), jnp.sum(correct & mask)
  return jax.jit(eval_step)


def summed_over_batches(sums: Callable, num_rows: int, take: Callable,
                        size: int, placement: Placement) -> list:
  """Σ of `sums(*batch)` over all rows, in padded batches of `size` slots.

  The one evaluation loop (images and language models). `take(indices)`
  gives a batch's arrays for row indices; padding slots repeat row 0 and
  carry False in the `real` mask appended last, which `sums` must honour.
  Each batch is split over `placement`'s devices (`size` a multiple of
  their number); each host gathers only its devices' rows. Returns one
  float per output of `sums`.
  """
  totals = None
  for start in range(0, num_rows, size):
    def gather(positions, start=start):
      index = start + positions
      real = index < num_rows
      return tuple(take(np.where(real, index, 0))) + (real,)
    out = [float(x) for x in sums(*placement.put_batch(gather, size))]
    totals = out if totals is None else [a + b for a, b in zip(totals, out)]
  return totals


def evaluate(eval_step, params, images, labels, batch_size: int,
             placement: Optional[Placement] = None):
  """Mean loss and accuracy over a whole split, in fixed-size batches."""
  placement = placement or Placement(make_mesh(1))
  devices = placement.num_devices
  size = -(-batch_size // devices) * devices
  n = len(labels)
  loss, correct = summed_over_batches(
      lambda *batch: eval_step(params, *batch), n,
      lambda rows: (images[rows], labels[rows]), size, placement)
  return loss / n, correct / n

"""The explicit state of a training run."""

import dataclasses
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class TrainState:
  """Everything a step reads and writes. The noise key lives in `opt_state`."""

  step: jax.Array  # int32 scalar: logical steps taken (rollbacks lower it).
  params: Any
  opt_state: Any
  # float32 scalar multiplying every update: 1, lowered by divergence recovery.
  # Scaling the optimizer's output is scaling its learning rate (momentum and
  # Adam moments see the unscaled privatised gradients, which are unchanged).
  lr_scale: jax.Array = dataclasses.field(
      default_factory=lambda: jnp.ones([], jnp.float32))
  # Exponential moving average of the parameters (optimizer.ema_decay > 0),
  # evaluated instead of `params`; None when off. Post-processing of the
  # privatised parameters: no privacy cost.
  ema_params: Any = None

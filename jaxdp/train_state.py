"""The explicit state of a training run."""

from typing import Any

import flax.struct
import jax


@flax.struct.dataclass
class TrainState:
  """Everything a step reads and writes. The noise key lives in `opt_state`."""

  step: jax.Array  # int32 scalar: logical steps taken.
  params: Any
  opt_state: Any

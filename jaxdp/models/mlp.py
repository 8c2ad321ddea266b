"""A multilayer perceptron over flattened inputs."""

from typing import Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp


class MLP(nn.Module):
  """Dense layers with `activation` between them, then a linear classifier."""

  hidden_sizes: Sequence[int]
  num_classes: int
  activation: Callable[[jnp.ndarray], jnp.ndarray] = nn.relu

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    x = jnp.reshape(x, (x.shape[0], -1))
    for width in self.hidden_sizes:
      x = self.activation(nn.Dense(width)(x))
    return nn.Dense(self.num_classes)(x)

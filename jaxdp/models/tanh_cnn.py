"""The small CNN of Papernot et al. 2021, "Tempered Sigmoid Activations for
Deep Learning with Differential Privacy" (AAAI), MNIST architecture.

conv 16 8×8 stride 2 (same) → maxpool 2 stride 1 → conv 32 4×4 stride 2
(valid) → maxpool 2 stride 1 → dense 32 → dense 10, tanh after every hidden
layer. On 28×28×1 inputs it has 26,010 parameters. Tramèr & Boneh 2021 use the
same network as their end-to-end CNN baseline for MNIST and Fashion-MNIST.
"""

from typing import Callable

import flax.linen as nn
import jax.numpy as jnp


class TanhCNN(nn.Module):
  """Papernot et al. 2021's MNIST CNN; `activation` defaults to tanh."""

  num_classes: int
  activation: Callable[[jnp.ndarray], jnp.ndarray] = jnp.tanh

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    x = nn.Conv(16, (8, 8), strides=(2, 2), padding='SAME')(x)
    x = self.activation(x)
    x = nn.max_pool(x, (2, 2), strides=(1, 1))
    x = nn.Conv(32, (4, 4), strides=(2, 2), padding='VALID')(x)
    x = self.activation(x)
    x = nn.max_pool(x, (2, 2), strides=(1, 1))
    x = jnp.reshape(x, (x.shape[0], -1))
    x = self.activation(nn.Dense(32)(x))
    return nn.Dense(self.num_classes)(x)

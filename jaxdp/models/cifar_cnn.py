"""The CIFAR-10 CNN of Papernot et al. 2021 (tempered sigmoids), also the
end-to-end CIFAR-10 baseline of Tramèr & Boneh 2021.

Six 3×3 convolutions (stride 1, same padding) with 32, 32, 64, 64, 128, 128
channels, a 2×2 max-pool (stride 2) after every second one, then dense 128 and
the classifier; the activation follows every hidden layer. On 32×32×3 inputs
it has 550,570 parameters.
"""

from typing import Callable

import flax.linen as nn
import jax.numpy as jnp


class CifarCNN(nn.Module):
  """Papernot et al. 2021's CIFAR-10 CNN; `activation` defaults to tanh."""

  num_classes: int
  activation: Callable[[jnp.ndarray], jnp.ndarray] = jnp.tanh

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    for features in (32, 64, 128):
      for _ in range(2):
        x = self.activation(nn.Conv(features, (3, 3), padding='SAME')(x))
      x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = jnp.reshape(x, (x.shape[0], -1))
    x = self.activation(nn.Dense(128)(x))
    return nn.Dense(self.num_classes)(x)

"""Models on scattering coefficients (`data.features=scattering`), from
Tramèr & Boneh 2021, "Differentially Private Learning Needs Better Features
(or Much More Data)" (ICLR).

Each first normalises its input, in one of the paper's two ways:
* `groups` > 0: a GroupNorm without learned scale or shift, so every example
  is standardised over groups of channels on its own, at no privacy cost (the
  paper's choice for Fashion-MNIST, 27 groups);
* `groups` = 0: no norm layer; the inputs were standardised beforehand with
  channel statistics released with noise (`dp.normalization_noise_multiplier`,
  `jaxdp/private_releases.py`), whose cost is in ε (MNIST and CIFAR-10).

* `ScatterLinear`: normalise, flatten, one dense layer (a linear model).
* `ScatterCNN` on 7×7×81 features (MNIST, Fashion-MNIST): conv 16 3×3
  stride 2 → conv 32 3×3 → dense 32 → classifier.
* `ScatterCNN` on 8×8×243 features (CIFAR-10, `cifar=True`): conv 64 3×3 →
  max-pool 2 → conv 64 3×3 → classifier.
The activation (tanh in the paper) follows every hidden layer.
"""

from typing import Callable

import flax.linen as nn
import jax.numpy as jnp

from jaxdp.errors import ConfigError

Activation = Callable[[jnp.ndarray], jnp.ndarray]


def _check_groups(groups: int) -> None:
  if groups < 0 or (groups and 81 % groups):
    raise ConfigError('groups', f'{groups} GroupNorm groups do not divide the '
                      '81 scattering channels of a colour channel',
                      'use a divisor of 81 (27 in the paper), or 0 with '
                      'dp.normalization_noise_multiplier > 0')


def _normalise(x: jnp.ndarray, groups: int) -> jnp.ndarray:
  if groups == 0:  # Standardised beforehand with released statistics.
    return x
  return nn.GroupNorm(num_groups=groups, use_bias=False, use_scale=False,
                      name='input_norm')(x)


class ScatterLinear(nn.Module):
  """GroupNorm of the features, then a linear classifier."""

  num_classes: int
  groups: int = 27

  def __post_init__(self):
    _check_groups(self.groups)  # Fail when built, not at the first init.
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    x = _normalise(x, self.groups)
    return nn.Dense(self.num_classes)(jnp.reshape(x, (x.shape[0], -1)))


class ScatterCNN(nn.Module):
  """GroupNorm of the features, then the paper's small CNN."""

  num_classes: int
  groups: int = 27
  activation: Activation = jnp.tanh
  cifar: bool = False

  def __post_init__(self):
    _check_groups(self.groups)
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    x = _normalise(x, self.groups)
    if self.cifar:
      x = self.activation(nn.Conv(64, (3, 3), padding='SAME')(x))
      x = nn.max_pool(x, (2, 2), strides=(2, 2))
      x = self.activation(nn.Conv(64, (3, 3), padding='SAME')(x))
      return nn.Dense(self.num_classes)(jnp.reshape(x, (x.shape[0], -1)))
    x = self.activation(nn.Conv(16, (3, 3), strides=(2, 2),
                                padding=((1, 1), (1, 1)))(x))
    x = self.activation(nn.Conv(32, (3, 3), padding='SAME')(x))
    x = self.activation(nn.Dense(32)(jnp.reshape(x, (x.shape[0], -1))))
    return nn.Dense(self.num_classes)(x)

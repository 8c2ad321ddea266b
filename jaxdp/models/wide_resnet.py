"""The Wide ResNet that De et al. 2022 train with DP-SGD on CIFAR-10.

WRN-depth-width (Zagoruyko & Komodakis 2016, "Wide Residual Networks", BMVC)
with every BatchNorm replaced by GroupNorm, as in De et al. 2022, "Unlocking
High-Accuracy Differentially Private Image Classification through Scale"
(arXiv:2204.13650):

    conv3x3 16 → stage 1: (depth − 4) / 6 blocks, 16·width channels
               → stage 2: (depth − 4) / 6 blocks, 32·width channels, stride 2
               → stage 3: (depth − 4) / 6 blocks, 64·width channels, stride 2
               → GroupNorm → activation → global average pool → Dense

Each block is pre-activation (He et al. 2016, "Identity Mappings in Deep
Residual Networks"): GroupNorm → act → conv3x3 (stride) → GroupNorm → act →
conv3x3, added to the block's input, or to a 1x1 conv of the pre-activated
input where the shape changes. On 32x32x3 inputs with 10 classes, WRN-16-4 has
2,748,890 parameters, the same as the BatchNorm original (about 2.75M), since
a GroupNorm has the same scale and bias per channel as a BatchNorm.

Why GroupNorm: BatchNorm normalises each example with statistics of the whole
batch, so one example's gradient depends on every other example in it and
per-example clipping no longer bounds any one example's influence (see
`example_mixing.py`). GroupNorm normalises each example on its own.

Weight standardisation (`weight_standardization=True`, as De et al.): every
conv kernel is standardised over its fan-in (zero mean, unit variance per
output channel) and multiplied by a learned per-channel gain before use
(Qiao et al. 2019). Off by default: a plain `nn.Conv` is what
`fast_clipping` computes per-example norms for without `vmap`, whereas the
standardised kernel is a non-linear function of the parameters, so those
convolutions fall back to exact per-example gradients by `vmap` (slower,
same guarantee). Other differences from De et al.'s code remain: they apply
the activation before the norm and give the projection shortcut its own norm.
"""

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdp.errors import ConfigError

Activation = Callable[[jnp.ndarray], jnp.ndarray]


class WSConv(nn.Module):
  """A bias-free conv whose kernel is standardised over its fan-in.

  kernel' = gain · (kernel − mean) / sqrt(max(var · fan_in, 1e-4)), mean and
  variance over the (height, width, input channel) axes of each output
  channel, so that kernel' has unit L2 norm per output channel times gain.
  """

  features: int
  kernel_size: tuple[int, int]
  strides: tuple[int, int] = (1, 1)

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    shape = (*self.kernel_size, x.shape[-1], self.features)
    kernel = self.param('kernel', nn.initializers.variance_scaling(
        1.0, 'fan_in', 'normal'), shape)
    gain = self.param('gain', nn.initializers.ones, (self.features,))
    fan_in = shape[0] * shape[1] * shape[2]
    mean = jnp.mean(kernel, axis=(0, 1, 2), keepdims=True)
    var = jnp.var(kernel, axis=(0, 1, 2), keepdims=True)
    kernel = (kernel - mean) * jax.lax.rsqrt(jnp.maximum(var * fan_in, 1e-4))
    return jax.lax.conv_general_dilated(
        x, (kernel * gain).astype(x.dtype), self.strides, 'SAME',
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def _conv(features: int, size: int, strides, name: str, standardize: bool):
  """A bias-free 3×3 or 1×1 conv, weight-standardised if asked."""
  strides = tuple(strides) if not isinstance(strides, int) else (strides,) * 2
  if standardize:
    return WSConv(features, (size, size), strides, name=name)
  return nn.Conv(features, (size, size), strides=strides, padding='SAME',
                 use_bias=False, name=name)


def _check_groups(groups: int, channels: tuple[int, ...]) -> None:
  bad = sorted({c for c in channels if groups < 1 or c % groups})
  if bad:
    raise ConfigError(
        'groups', f'{groups} GroupNorm groups do not divide the channel '
        f'counts {bad}',
        f'use a divisor of every one of {sorted(set(channels))}')


class WideResNetBlock(nn.Module):
  """One pre-activation residual block with GroupNorm.

  Attributes:
    features: output channels of both 3x3 convs.
    strides: stride of the first conv and of the projection shortcut.
    groups: GroupNorm groups; must divide the input channels and `features`.
    activation: the nonlinearity after each norm.
    weight_standardization: standardise every conv kernel (`WSConv`).
  """

  features: int
  strides: int = 1
  groups: int = 16
  activation: Activation = nn.relu
  weight_standardization: bool = False

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    """[n, H, W, C] -> [n, ceil(H / strides), ceil(W / strides), features]."""
    _check_groups(self.groups, (x.shape[-1], self.features))
    strides = (self.strides, self.strides)
    # No conv biases, as in the original WRN: the norm layers carry the shifts.
    conv = lambda f, k, s, name: _conv(f, k, s, name,
                                       self.weight_standardization)
    norm = lambda name: nn.GroupNorm(num_groups=self.groups, name=name)
    pre = self.activation(norm('norm_1')(x))
    y = conv(self.features, 3, strides, 'conv_1')(pre)
    y = self.activation(norm('norm_2')(y))
    y = conv(self.features, 3, (1, 1), 'conv_2')(y)
    if x.shape[-1] == self.features and self.strides == 1:
      return x + y
    # The projection sees the normalised input, like the residual branch, so
    # the raw stem output never bypasses a norm.
    return conv(self.features, 1, strides, 'shortcut')(pre) + y


class WideResNet(nn.Module):
  """WRN-`depth`-`width` with GroupNorm, for NHWC images -> logits.

  Attributes:
    num_classes: outputs of the final Dense layer.
    depth: total conv + dense layers; (depth − 4) must be a multiple of 6.
    width: channel multiplier k of the three stages (16k, 32k, 64k).
    groups: GroupNorm groups in every norm; must divide 16 and 16·width.
    activation: the nonlinearity after each norm.
    weight_standardization: standardise every conv kernel (De et al. 2022).
  """

  num_classes: int
  depth: int = 16
  width: int = 4
  groups: int = 16
  activation: Activation = nn.relu
  weight_standardization: bool = False

  def __post_init__(self):
    # Fail when the model is built, not at the first init deep in training.
    if self.depth < 10 or (self.depth - 4) % 6:
      raise ConfigError(
          'depth', f'WRN depth must be 6·n + 4 with n ≥ 1, got {self.depth}',
          'use 10, 16, 22, 28 or 40')
    if self.width < 1:
      raise ConfigError('width', f'must be ≥ 1, got {self.width}',
                        'use e.g. 4 (WRN-16-4) or 10 (WRN-28-10)')
    _check_groups(self.groups, (16,) + self.stage_features)
    super().__post_init__()

  @property
  def stage_features(self) -> tuple[int, int, int]:
    return (16 * self.width, 32 * self.width, 64 * self.width)

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    """Images [n, H, W, C] float -> logits [n, num_classes]."""
    x = _conv(16, 3, 1, 'stem', self.weight_standardization)(x)
    blocks_per_stage = (self.depth - 4) // 6
    for stage, features in enumerate(self.stage_features):
      for i in range(blocks_per_stage):
        # Stages 2 and 3 halve the resolution in their first block.
        strides = 2 if stage > 0 and i == 0 else 1
        x = WideResNetBlock(features, strides, self.groups, self.activation,
                            self.weight_standardization,
                            name=f'stage{stage + 1}_block{i + 1}')(x)
    x = self.activation(nn.GroupNorm(num_groups=self.groups,
                                     name='final_norm')(x))
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes, name='classifier')(x)

"""Low-rank adapters (LoRA, Hu et al. 2022) as ordinary Flax layers.

`LoRADense` computes x W + (α / r) · (x A) B with the base layer W (and bias)
frozen and only A (d × r) and B (r × p) trained; B starts at zero, so the
adapted model starts as the base model. A and B are two bias-free `nn.Dense`
layers, so per-example clipping takes the fast path for them: the gradient of
B is that of a Dense layer on inputs x A, and the gradient of A that of a Dense
layer whose output gradient is (α / r) g Bᵀ.

Training only the adapters: `split_adapters(params)` separates the adapter
leaves from the frozen ones, and `with_frozen(loss, frozen)` turns a loss of
all parameters into a loss of the adapters alone.
"""

from typing import Callable

import flax.linen as nn
from flax import traverse_util
import jax.numpy as jnp

ADAPTER_NAMES = ('lora_down', 'lora_up')


class LoRADense(nn.Module):
  """A Dense layer with a trainable rank-`rank` update."""

  features: int
  rank: int
  alpha: float = 1.0

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    base = nn.Dense(self.features, name='base')(x)
    down = nn.Dense(self.rank, use_bias=False, name='lora_down',
                    kernel_init=nn.initializers.lecun_normal())(x)
    up = nn.Dense(self.features, use_bias=False, name='lora_up',
                  kernel_init=nn.initializers.zeros)(down)
    return base + (self.alpha / self.rank) * up


def dense_or_lora(features: int, rank: int, name: str) -> nn.Module:
  """nn.Dense when rank is 0, else a LoRADense of that rank."""
  if rank:
    return LoRADense(features, rank, name=name)
  return nn.Dense(features, name=name)


def split_adapters(params) -> tuple[dict, dict]:
  """(frozen, adapters): the params split on the adapter layer names."""
  flat = traverse_util.flatten_dict(params)
  is_adapter = lambda path: any(name in ADAPTER_NAMES for name in path)
  adapters = {k: v for k, v in flat.items() if is_adapter(k)}
  frozen = {k: v for k, v in flat.items() if not is_adapter(k)}
  return (traverse_util.unflatten_dict(frozen),
          traverse_util.unflatten_dict(adapters))


def with_frozen(batch_loss: Callable, frozen) -> Callable:
  """loss(adapters, batch) = batch_loss(frozen ∪ adapters, batch)."""
  frozen_flat = traverse_util.flatten_dict(frozen)

  def loss(adapters, batch):
    merged = {**frozen_flat, **traverse_util.flatten_dict(adapters)}
    return batch_loss(traverse_util.unflatten_dict(merged), batch)

  return loss

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
import jax
import jax.numpy as jnp

ADAPTER_NAMES = ('lora_down', 'lora_up')


class LoRADense(nn.Module):
  """A Dense layer with a trainable rank-`rank` update."""

  features: int
  rank: int
  alpha: float = 1.0
  use_bias: bool = True  # Of the frozen base layer (Llama's have none).

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    base = nn.Dense(self.features, use_bias=self.use_bias, name='base')(x)
    down = nn.Dense(self.rank, use_bias=False, name='lora_down',
                    kernel_init=nn.initializers.lecun_normal())(x)
    up = nn.Dense(self.features, use_bias=False, name='lora_up',
                  kernel_init=nn.initializers.zeros)(down)
    return base + (self.alpha / self.rank) * up


def dense_or_lora(features: int, rank: int, name: str, alpha: float = 1.0,
                  use_bias: bool = True) -> nn.Module:
  """nn.Dense when rank is 0, else a LoRADense of that rank."""
  if rank:
    return LoRADense(features, rank, alpha, use_bias, name=name)
  return nn.Dense(features, use_bias=use_bias, name=name)


def init_adapters(abstract_params, key):
  """Fresh adapters for a model whose parameter shapes are `abstract_params`.

  The same initialisers as `LoRADense` (A lecun-normal, B zero), without
  initialising the frozen weights, which a loader replaces anyway (for a
  pretrained model that is most of the work of `model.init`).
  """
  out = {}
  flat = traverse_util.flatten_dict(abstract_params)
  for i, (path, leaf) in enumerate(sorted(flat.items())):
    if path[-2:] == ('lora_down', 'kernel'):
      out[path] = nn.initializers.lecun_normal()(
          jax.random.fold_in(key, i), leaf.shape, leaf.dtype)
    elif path[-2:] == ('lora_up', 'kernel'):
      out[path] = jnp.zeros(leaf.shape, leaf.dtype)
  return traverse_util.unflatten_dict(out)


def attach_base(abstract_params, base_params, adapters):
  """The parameters of a LoRA model: `adapters` plus frozen `base_params`.

  `abstract_params` give the LoRA model's layout (shapes suffice);
  `base_params` are the same model's parameters without adapters (as a
  weight loader gives them): a LoRA layer's `base/kernel` comes from the
  plain layer's `kernel`.
  """
  base = traverse_util.flatten_dict(base_params)
  given = traverse_util.flatten_dict(adapters)
  out = {}
  for path, value in traverse_util.flatten_dict(abstract_params).items():
    if any(name in ADAPTER_NAMES for name in path):
      out[path] = given[path]
      continue
    plain = tuple(name for name in path if name != 'base')
    if plain not in base:
      raise KeyError(f'no weight for {"/".join(path)} among the loaded '
                     'parameters')
    if base[plain].shape != value.shape:
      raise ValueError(f'{"/".join(path)}: loaded shape {base[plain].shape}, '
                       f'the model wants {value.shape}')
    out[path] = base[plain]
  return traverse_util.unflatten_dict(out)


def split_adapters(params) -> tuple[dict, dict]:
  """(frozen, adapters): the params split on the adapter layer names."""
  flat = traverse_util.flatten_dict(params)
  is_adapter = lambda path: any(name in ADAPTER_NAMES for name in path)
  adapters = {k: v for k, v in flat.items() if is_adapter(k)}
  frozen = {k: v for k, v in flat.items() if not is_adapter(k)}
  return (traverse_util.unflatten_dict(frozen),
          traverse_util.unflatten_dict(adapters))


def merge(frozen, trainable):
  """frozen ∪ trainable as one parameter tree (`trainable` if no `frozen`)."""
  if frozen is None:
    return trainable
  merged = {**traverse_util.flatten_dict(frozen),
            **traverse_util.flatten_dict(trainable)}
  return traverse_util.unflatten_dict(merged)


def with_frozen(batch_loss: Callable, frozen) -> Callable:
  """loss(adapters, batch) = batch_loss(frozen ∪ adapters, batch)."""
  return lambda adapters, batch: batch_loss(merge(frozen, adapters), batch)

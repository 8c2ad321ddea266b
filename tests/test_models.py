"""Models: the paper architectures, and the refusal of example-mixing layers."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import pytest

from jaxdp import models
from jaxdp.errors import ConfigError


def _count(params):
  return sum(x.size for x in jax.tree_util.tree_leaves(params))


def test_tanh_cnn_matches_papernot_et_al_on_mnist_shapes():
  model = models.TanhCNN(num_classes=10)
  x = jnp.zeros((2, 28, 28, 1))
  params = model.init(jax.random.key(0), x)['params']
  assert _count(params) == 26_010
  assert model.apply({'params': params}, x).shape == (2, 10)
  kernels = [params[f'Conv_{i}']['kernel'].shape for i in range(2)]
  assert kernels == [(8, 8, 1, 16), (4, 4, 16, 32)]


def test_build_model_by_name():
  cfg = ml_collections.ConfigDict({'name': 'mlp', 'hidden_sizes': (5, 4),
                                   'activation': 'relu'})
  model = models.build_model(cfg, num_classes=3)
  params = model.init(jax.random.key(0), jnp.zeros((1, 2, 3, 1)))['params']
  assert _count(params) == 6 * 5 + 5 + 5 * 4 + 4 + 4 * 3 + 3
  wrn = models.build_model(ml_collections.ConfigDict(
      {'name': 'wide_resnet', 'depth': 10, 'width': 1, 'groups': 4,
       'weight_standardization': False,
       'activation': 'relu'}), num_classes=3)
  assert (wrn.depth, wrn.width, wrn.groups) == (10, 1, 4)
  with pytest.raises(ConfigError, match='^model.depth: '):
    models.build_model(ml_collections.ConfigDict(
        {'name': 'wide_resnet', 'depth': 12, 'width': 1, 'groups': 4,
         'weight_standardization': False,
         'activation': 'relu'}), num_classes=3)
  with pytest.raises(ConfigError, match='model.name'):
    models.build_model(ml_collections.ConfigDict(
        {'name': 'resnet', 'hidden_sizes': (), 'activation': 'relu'}), 3)


class _WithBatchNorm(nn.Module):

  @nn.compact
  def __call__(self, x):
    x = nn.Dense(4)(jnp.reshape(x, (x.shape[0], -1)))
    x = nn.BatchNorm(use_running_average=False)(x)
    return nn.Dense(2)(x)


class _WithGroupNorm(nn.Module):

  @nn.compact
  def __call__(self, x):
    x = nn.Conv(4, (3, 3))(x)
    x = nn.GroupNorm(num_groups=2)(x)
    return nn.Dense(2)(jnp.reshape(x, (x.shape[0], -1)))


def test_batchnorm_is_refused_with_the_reason_and_the_fix():
  with pytest.raises(ConfigError) as info:
    models.check_no_example_mixing(_WithBatchNorm(), jnp.zeros((1, 3, 3, 1)))
  message = str(info.value)
  assert 'BatchNorm' in message and 'mixes examples' in message
  assert 'GroupNorm' in message


def test_groupnorm_is_accepted():
  models.check_no_example_mixing(_WithGroupNorm(), jnp.zeros((1, 4, 4, 1)))
  models.check_no_example_mixing(models.TanhCNN(10), jnp.zeros((1, 28, 28, 1)))


def test_lora_starts_at_the_base_model_and_trains_only_adapters():
  from jaxdp.models import lora
  from jaxdp.models.transformer import TransformerLM
  from jaxdp.models.transformer import next_token_loss
  tokens = jax.random.randint(jax.random.key(0), (2, 7), 0, 11)
  base = TransformerLM(11, 6, width=8, depth=1, num_heads=2)
  adapted = TransformerLM(11, 6, width=8, depth=1, num_heads=2, lora_rank=2)
  params = adapted.init(jax.random.key(1), tokens[:, :-1])['params']
  frozen, adapters = lora.split_adapters(params)
  from flax import traverse_util
  layer_names = {path[-2] for path in traverse_util.flatten_dict(adapters)}
  assert layer_names == set(lora.ADAPTER_NAMES)
  # B = 0 at init: the adapted model computes exactly the base model.
  def strip(tree):  # LoRADense keeps its base layer under 'base'.
    if not hasattr(tree, 'keys'):
      return tree
    if set(tree) == {'base'}:
      return strip(tree['base'])
    return {k: strip(v) for k, v in tree.items()}
  base_out = jax.jit(base.apply)({'params': strip(frozen)}, tokens[:, :-1])
  adapted_out = jax.jit(adapted.apply)({'params': params}, tokens[:, :-1])
  assert jnp.allclose(base_out, adapted_out, atol=1e-6)
  loss = lora.with_frozen(next_token_loss(adapted.apply), frozen)
  grads = jax.jit(jax.grad(lambda a: jnp.sum(loss(a, tokens))))(adapters)
  assert (jax.tree_util.tree_structure(grads) ==
          jax.tree_util.tree_structure(adapters))

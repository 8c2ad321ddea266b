"""The GroupNorm Wide ResNet: shapes, size, no example mixing, fast clipping."""

import functools

from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from equivalence import assert_fast_matches_vmap
from jaxdp import models
from jaxdp.models.wide_resnet import WideResNet
from jaxdp.models.wide_resnet import WideResNetBlock


# Flax initialises with threefry by default, which takes seconds per layer to
# compile on CPU; rbg keys compile in a fraction of that, and any random
# parameters serve these tests.
_KEY = jax.random.key(0, impl='rbg')


def _normal(shape, seed=1):
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape),
                     jnp.float32)


def _count(tree):
  return sum(x.size for x in jax.tree_util.tree_leaves(tree))


def _wrn_param_count(depth, width, in_channels, num_classes):
  """Counted from the architecture: convs have no bias, norms scale + bias."""
  conv = lambda k, c_in, c_out: k * k * c_in * c_out
  norm = lambda c: 2 * c
  total = conv(3, in_channels, 16)  # Stem.
  c_in = 16
  for c in (16 * width, 32 * width, 64 * width):
    for i in range((depth - 4) // 6):
      total += norm(c_in) + conv(3, c_in, c) + norm(c) + conv(3, c, c)
      if c_in != c:  # 1x1 projection; strided blocks also change channels.
        total += conv(1, c_in, c)
      c_in = c
  return total + norm(c_in) + c_in * num_classes + num_classes


def test_wrn_16_4_shapes_and_size_on_cifar10():
  model = WideResNet(num_classes=10)  # Defaults: depth 16, width 4.
  x = jnp.zeros((2, 32, 32, 3))
  variables = jax.eval_shape(model.init, jax.random.key(0), x)
  assert set(variables) == {'params'}
  expected = _wrn_param_count(16, 4, 3, 10)
  assert _count(variables['params']) == expected
  assert abs(expected - 2.75e6) < 0.01e6  # The BatchNorm WRN-16-4's size.
  logits = jax.eval_shape(model.apply, variables, x)
  assert logits.shape == (2, 10)


@functools.cache  # Shared by several tests: compiling init takes seconds.
def _tiny():
  model = WideResNet(num_classes=3, depth=10, width=1, groups=4)
  x = _normal((4, 8, 8, 3))
  params = jax.jit(model.init)(_KEY, x)['params']
  return model, params, x


def test_tiny_model_runs_and_has_the_expected_size():
  model, params, x = _tiny()
  assert _count(params) == _wrn_param_count(10, 1, 3, 3)
  logits = jax.jit(model.apply)({'params': params}, x)
  assert logits.shape == (4, 3)
  assert np.all(np.isfinite(logits))
  # Stage 1 keeps 16 channels at width 1: no projection; stages 2, 3 have one.
  assert 'shortcut' not in params['stage1_block1']
  assert params['stage2_block1']['shortcut']['kernel'].shape == (1, 1, 16, 32)


def test_has_no_example_mixing():
  models.check_no_example_mixing(WideResNet(10), jnp.zeros((1, 32, 32, 3)))


@pytest.mark.parametrize('kwargs, field', [
    (dict(depth=15), 'depth'), (dict(depth=4), 'depth'),
    (dict(groups=3), 'groups'), (dict(groups=0), 'groups'),
    (dict(width=0), 'width')])
def test_bad_settings_name_the_field(kwargs, field):
  with pytest.raises(ValueError, match=f'^{field}:'):
    WideResNet(num_classes=10, **kwargs)


def test_block_rejects_groups_that_do_not_divide_its_input():
  block = WideResNetBlock(features=8, groups=4)
  with pytest.raises(ValueError, match='^groups:'):
    block.init(jax.random.key(0), jnp.zeros((1, 4, 4, 6)))


def test_an_example_logits_ignore_the_rest_of_the_batch():
  model, params, x = _tiny()
  other = x.at[1:].set(10.0 * _normal(x[1:].shape, seed=2))
  apply = jax.jit(model.apply)
  first = apply({'params': params}, x)[0]
  np.testing.assert_allclose(apply({'params': params}, other)[0], first,
                             rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(apply({'params': params}, x[:1])[0], first,
                             rtol=1e-5, atol=1e-6)


def _block_case():
  # Channels and stride change, so the block has its projection shortcut.
  model = WideResNetBlock(features=8, strides=2, groups=4)
  x = _normal((4, 6, 6, 4))
  params = jax.jit(model.init)(_KEY, x)['params']
  assert 'shortcut' in params
  return model, params, x


def _model_case():
  model = WideResNet(num_classes=3, depth=10, width=1, groups=8)
  x = _normal((3, 8, 8, 3))
  return model, jax.jit(model.init)(_KEY, x)['params'], x


@pytest.mark.parametrize('case', [_block_case, _model_case],
                         ids=['block', 'model'])
def test_fast_clipping_matches_vmap_and_covers_every_layer(case):
  model, params, x = case()

  def loss(p, xs):  # Per-example losses [n], from logits or feature maps.
    out = model.apply({'params': p}, xs)
    return jnp.sum(jnp.reshape(out, (out.shape[0], -1)) ** 2, axis=-1)

  sites = assert_fast_matches_vmap(loss, params, x)
  # Every parameter is on the fast path: nothing falls back to vmap.
  covered = {s.path + (k,) for s in sites for k in s.param_names}
  assert covered == set(traverse_util.flatten_dict(params))
  assert {s.kind for s in sites} >= {'linear', 'norm'}

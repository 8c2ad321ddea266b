"""Per-layer clipping: each layer within its C_k, Σ C_k² ≤ C², ε as global."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import base
from jaxdp import clipping
from jaxdp.clipping import per_layer
from jaxdp.errors import ConfigError
from jaxdp.train import train_and_evaluate


class _Net(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.Conv(4, (3, 3))(x)  # A convolution: a fast-clipping site too.
    x = jnp.tanh(x).reshape((x.shape[0], -1))
    x = jnp.tanh(nn.Dense(16)(x))
    return nn.Dense(3)(x)


def _loss(params, batch):
  x, y = batch
  return optax.softmax_cross_entropy_with_integer_labels(
      _Net().apply({'params': params}, x), y)


def _setup(n=12, scale=5.0):
  rng = np.random.default_rng(0)
  x = (scale * rng.normal(size=(n, 6, 6, 1))).astype(np.float32)
  y = rng.integers(0, 3, n).astype(np.int32)
  params = _Net().init(jax.random.key(0), x[:1])['params']
  return params, (x, y), np.ones(n, bool)


def _layer_norms(tree) -> dict:
  return {layer: math.sqrt(sum(float(np.sum(np.asarray(v, np.float64) ** 2))
                               for v in leaves.values()))
          for layer, leaves in tree.items()}


@pytest.mark.parametrize('split', per_layer.SPLITS)
@pytest.mark.parametrize('method', sorted(clipping.METHODS))
def test_each_layer_stays_within_its_bound(split, method):
  params, batch, mask = _setup()
  rule = per_layer.PerLayer(split)
  sizes = [sum(v.size for v in leaves.values()) for leaves in params.values()]
  fractions = rule.fractions(sizes)
  assert np.sum(fractions ** 2) == pytest.approx(1.0)
  clip = 0.5
  summed = jax.jit(clipping.clipped_sum(_loss, clip, rule, method))
  for i in range(len(mask)):
    total, stats = summed(params, batch, np.arange(len(mask)) == i)
    norms = _layer_norms(total)
    for (layer, norm), fraction in zip(norms.items(), fractions):
      assert norm <= clip * fraction * (1 + 1e-6), (layer, norm)
    # Float32 products of factor and gradient: within rounding of C.
    assert math.sqrt(sum(v ** 2 for v in norms.values())) <= clip * (1 + 1e-6)
    assert bool(stats.clipped[i])  # Large inputs: some layer was cut.


def test_fast_and_ghost_equal_vmap():
  params, batch, mask = _setup()
  mask[-3:] = False  # Padding contributes nothing under every method.
  rule = per_layer.PerLayer('params')
  ref, ref_stats = jax.jit(clipping.clipped_sum(_loss, 0.3, rule, 'vmap'))(
      params, batch, mask)
  for method in ('fast', 'ghost'):
    got, stats = jax.jit(clipping.clipped_sum(_loss, 0.3, rule, method))(
        params, batch, mask)
    for a, b in zip(jax.tree_util.tree_leaves(got),
                    jax.tree_util.tree_leaves(ref)):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(stats.norms, ref_stats.norms, rtol=1e-4)
    np.testing.assert_array_equal(stats.clipped, ref_stats.clipped)


def test_a_non_finite_layer_drops_the_whole_example():
  params, (x, y), mask = _setup(n=4)
  x = x.copy()
  x[1, 0, 0, 0] = np.inf
  rule = per_layer.PerLayer()
  for method in sorted(clipping.METHODS):
    total, stats = jax.jit(clipping.clipped_sum(_loss, 1.0, rule, method))(
        params, (x, y), mask)
    alone, _ = jax.jit(clipping.clipped_sum(_loss, 1.0, rule, method))(
        params, (x, y), mask & (np.arange(4) != 1))
    assert bool(stats.dropped[1]) and int(stats.dropped.sum()) == 1
    for a, b in zip(jax.tree_util.tree_leaves(total),
                    jax.tree_util.tree_leaves(alone)):
      np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize('clip', [1.0, 0.1, 3.7])
@pytest.mark.parametrize('layers', [1, 3, 7])
def test_float32_bounds_never_exceed_c(clip, layers):
  units = [clipping.per_example.Unit(layer=(str(k),), size=k + 1,
                                     squared_norms=jnp.full((2,), 1e6))
           for k in range(layers)]
  for split in per_layer.SPLITS:
    rule = per_layer.PerLayer(split)
    fractions = rule.fractions([u.size for u in units])
    for traced in (False, True):
      c = jnp.float32(clip) if traced else clip
      out = jax.jit(lambda c_: rule.clip(units, jnp.ones(2, bool), c_))(c) \
          if traced else rule.clip(units, jnp.ones(2, bool), c)
      # Gradient norm 1000 per layer: the clipped norm is factor · 1000.
      clipped = np.array([np.float64(f[0]) * 1e3 for f in out.factors])
      # A traced C is the float32 value the link holds (and noises with).
      c_used = np.float64(np.float32(clip)) if traced else clip
      assert np.sum(clipped ** 2) <= c_used ** 2
      assert np.all(clipped <= c_used * fractions)


def test_a_bad_split_names_the_field():
  dp = base.get_config().dp
  dp.clip_rule, dp.per_layer_clip_split = 'per_layer', 'by_magic'
  with pytest.raises(ConfigError, match='dp.per_layer_clip_split'):
    clipping.rule_from_config(dp)


def _digits_config(**dp):
  config = base.get_config()
  config.train.num_epochs = 2.0
  config.eval.every_steps = 6
  for key, value in dp.items():
    config.dp[key] = value
  return config


def test_a_per_layer_run_spends_what_a_global_run_spends_and_resume_keeps_it(
    tmp_path):
  glob = train_and_evaluate(_digits_config(), str(tmp_path / 'global'),
                            log=lambda line: None)
  layer = train_and_evaluate(_digits_config(clip_rule='per_layer'),
                             str(tmp_path / 'layer'), log=lambda line: None)
  assert layer['status'] == 'completed'
  assert layer['epsilon'] == glob['epsilon']
  assert layer['noise_multiplier'] == glob['noise_multiplier']
  assert layer['clip_rule'] == 'per_layer' and 'clip_rule' not in glob
  assert layer['accuracy'] > 0.2  # Learns something in 12 steps.
  with pytest.raises(ConfigError, match='dp.clip_rule'):
    train_and_evaluate(_digits_config(), str(tmp_path / 'layer'),
                       log=lambda line: None)
  with pytest.raises(ConfigError, match='dp.per_layer_clip_split'):
    train_and_evaluate(_digits_config(clip_rule='per_layer',
                                      per_layer_clip_split='params'),
                       str(tmp_path / 'layer'), log=lambda line: None)

"""De et al. 2022's recipe: augmentation multiplicity, parameter EMA, weight
standardisation."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from conftest import mlp_problem
from jaxdp.tasks import augmentation
from jaxdp.clipping import fast as fast_clipping
from jaxdp.train import step as steps
from jaxdp.mechanism import build_mechanism
from jaxdp.models.wide_resnet import WSConv
from jaxdp.train.state import TrainState
from jaxdp.mechanism import hand_built_dp


class _TinyCNN(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = jnp.tanh(nn.Conv(3, (3, 3))(x))
    return nn.Dense(4)(x.reshape(x.shape[0], -1))


def _is_flip_and_crop_of(view, image):
  pad = augmentation.PADDING
  for candidate in (image, image[:, ::-1]):
    padded = np.pad(candidate, ((pad, pad), (pad, pad), (0, 0)), 'reflect')
    for dy in range(2 * pad + 1):
      for dx in range(2 * pad + 1):
        crop = padded[dy:dy + image.shape[0], dx:dx + image.shape[1]]
        if np.array_equal(crop, view):
          return True
  return False


def test_views_are_flips_and_crops_keyed_by_execution_and_slot():
  rng = np.random.default_rng(0)
  images = rng.random((3, 8, 8, 2)).astype(np.float32)
  ids = np.array([[5, 0], [5, 1], [6, 0]], np.int32)
  views = np.asarray(augmentation.views(0, ids, images, 4))
  assert views.shape == (3, 4, 8, 8, 2)
  for i in range(3):
    for v in range(4):
      assert _is_flip_and_crop_of(views[i, v], images[i])
  again = np.asarray(augmentation.views(0, ids, images, 4))
  np.testing.assert_array_equal(views, again)  # A resumed run sees the same.
  moved = np.asarray(augmentation.views(0, ids + 1, images, 4))
  assert not np.array_equal(views, moved)


def test_each_example_is_clipped_once_over_all_its_views():
  """The clipped sum is Σᵢ clip(∇ mean-over-views loss of example i)."""
  model = _TinyCNN()
  rng = np.random.default_rng(1)
  images = jnp.asarray(rng.random((5, 6, 6, 1)), jnp.float32)
  labels = jnp.asarray(rng.integers(0, 4, 5))
  ids = jnp.asarray(np.stack([np.zeros(5), np.arange(5)], 1), jnp.int32)
  params = model.init(jax.random.key(0), images[:1])['params']
  loss = augmentation.classification_loss(model.apply, k=3, seed=0)
  clip = 0.05
  mask = jnp.ones(5, bool)
  fast = fast_clipping.fast_clipped_chunk(loss, clip)
  total, stats = jax.jit(fast)(params, (images, labels, ids), mask)

  def one(i):
    example = (images[i:i + 1], labels[i:i + 1], ids[i:i + 1])
    return jax.grad(lambda p: loss(p, example)[0])(params)
  flat = lambda t: jnp.concatenate([jnp.ravel(x) for x in
                                    jax.tree_util.tree_leaves(t)])
  expected = 0
  for i in range(5):
    g = flat(one(i))
    norm = float(jnp.linalg.norm(g))
    np.testing.assert_allclose(stats.norms[i], norm, rtol=1e-4)
    expected = expected + g * min(1.0, clip / norm)
  np.testing.assert_allclose(flat(total), expected, rtol=1e-4, atol=1e-6)


def test_ema_warms_up_then_tracks_the_parameters():
  assert float(steps.ema_decay_at(0.9999, jnp.asarray(0))) == pytest.approx(
      0.1)
  assert float(steps.ema_decay_at(0.5, jnp.asarray(1000))) == 0.5
  _, loss_fn, params, batch = mlp_problem()
  dp = hand_built_dp(**{
      'sampler': 'poisson', 'batch_size': 8, 'clip_norm': 1.0,
      'noise_multiplier': 1.0, 'target_epsilon': None, 'delta': 1e-5,
      'accountant': 'rdp', 'allow_large_delta': False})
  perf = ml_collections.ConfigDict({'clipping': 'fast',
                                    'microbatch_size': None,
                                    'batch_overflow_probability': 1e-3})
  mechanism = build_mechanism(dp, perf, num_examples=1000, num_steps=5,
                              num_epochs=None, seed=0)
  tx = optax.chain(mechanism.noise_transform(0), optax.sgd(0.5))
  state = TrainState(step=jnp.zeros([], jnp.int32), params=params,
                     opt_state=tx.init(params),
                     ema_params=jax.tree_util.tree_map(jnp.copy, params))
  train_step = steps.make_train_step(loss_fn, mechanism, tx, ema_decay=0.9)
  mask = jnp.ones(8, bool)
  for _ in range(3):
    old = jax.tree_util.tree_map(np.asarray, state.ema_params)  # Donated.
    state, _ = train_step(state, {'inputs': batch, 'mask': mask})
    d = float(steps.ema_decay_at(0.9, state.step))
    for e, o, p in zip(jax.tree_util.tree_leaves(state.ema_params),
                       jax.tree_util.tree_leaves(old),
                       jax.tree_util.tree_leaves(state.params)):
      np.testing.assert_allclose(e, d * o + (1 - d) * p, rtol=1e-5,
                                 atol=1e-7)


def test_weight_standardised_kernels_have_zero_mean_and_gain_norm():
  conv = WSConv(5, (3, 3))
  x = jnp.ones((2, 6, 6, 4))
  variables = conv.init(jax.random.key(0), x)
  kernel = variables['params']['kernel']
  # The effective kernel is linear in the input: read it off a unit impulse.
  assert conv.apply(variables, x).shape == (2, 6, 6, 5)
  centred = kernel - kernel.mean(axis=(0, 1, 2))
  effective = centred / jnp.sqrt(jnp.maximum(
      kernel.var(axis=(0, 1, 2)) * 36, 1e-4))
  np.testing.assert_allclose(jnp.linalg.norm(effective.reshape(36, 5), axis=0),
                             1.0, rtol=1e-5)
  impulse = jnp.zeros((1, 3, 3, 4)).at[0, 1, 1, 2].set(1.0)
  out = conv.apply(variables, impulse)
  np.testing.assert_allclose(out[0, 1, 1], effective[1, 1, 2], rtol=1e-5)

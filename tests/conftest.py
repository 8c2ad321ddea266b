"""Shared test helpers: tiny configs and a small MLP problem."""

import jax
import jax.numpy as jnp
import pytest

from configs import base
from jaxdp.models import MLP


def pytest_configure(config):
  config.addinivalue_line(
      'markers', 'slow: long runs (real data, full experiments); '
      'deselected unless -m slow')


@pytest.fixture
def small_config():
  """The base config shortened to a few steps on the bundled digits."""
  config = base.get_config()
  config.train.num_steps = 20
  config.eval.every_steps = 0
  config.dp.target_epsilon = None
  config.dp.noise_multiplier = 1.0
  return config


def mlp_problem(batch_size=8, in_dim=5, classes=3, seed=0):
  """(model, batch_loss(params, (x, y)) -> [n], params, (x, y)), a tiny MLP."""
  model = MLP(hidden_sizes=(7,), num_classes=classes, activation=jnp.tanh)
  kx, ky, kp = jax.random.split(jax.random.key(seed), 3)
  x = 3.0 * jax.random.normal(kx, (batch_size, in_dim))
  y = jax.random.randint(ky, (batch_size,), 0, classes)
  params = model.init(kp, x[:1])['params']

  def batch_loss(p, batch):
    xs, ys = batch
    logits = model.apply({'params': p}, xs)
    return -jnp.take_along_axis(jax.nn.log_softmax(logits), ys[:, None],
                                axis=1)[:, 0]

  return model, batch_loss, params, (x, y)

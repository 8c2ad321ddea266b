"""Runs the data-parallel checks on 8 simulated CPU devices; prints JSON.

`tests/test_data_parallel.py` starts this script in a subprocess with
XLA_FLAGS=--xla_force_host_platform_device_count=8 (the device count is fixed
when JAX starts, so the checks cannot run in the test process itself) and
asserts on what it prints.
"""

import json
import logging
import sys
import tempfile

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxdp.studies import scaling
from jaxdp import sharding
from jaxdp.train import step as steps
from jaxdp.mechanism import build_mechanism
from jaxdp.models import MLP
from jaxdp.train import train_and_evaluate
from jaxdp.train.state import TrainState
from jaxdp.mechanism import hand_built_dp
from run_configs import data_parallel_run_config

_SIGMA, _CLIP, _BATCH = 1.0, 0.5, 16


def _mechanism(microbatch, clipping, num_devices):
  dp = hand_built_dp(**{
      'sampler': 'fixed_size', 'batch_size': _BATCH, 'clip_norm': _CLIP,
      'noise_multiplier': _SIGMA, 'target_epsilon': None, 'delta': 1e-5,
      'accountant': 'rdp', 'allow_large_delta': False})
  perf = ml_collections.ConfigDict({
      'clipping': clipping, 'microbatch_size': microbatch,
      'batch_overflow_probability': 1e-3})
  return build_mechanism(dp, perf, num_examples=1000, num_steps=50,
                         num_epochs=None, seed=0, num_devices=num_devices)


def _problem():
  model = MLP(hidden_sizes=(32,), num_classes=4, activation=jnp.tanh)
  kx, ky, kp = jax.random.split(jax.random.key(1), 3)
  x = 2.0 * jax.random.normal(kx, (3, _BATCH, 6))
  y = jax.random.randint(ky, (3, _BATCH), 0, 4)
  params = model.init(kp, x[0, :1])['params']
  return (steps.classification_loss(model.apply), params,
          np.asarray(x), np.asarray(y))


def step_results(num_devices, param_sharding, microbatch, clipping):
  """Parameters after 3 noisy DP-SGD steps on one fixed set of batches."""
  batch_loss, params, xs, ys = _problem()
  mechanism = _mechanism(microbatch, clipping, num_devices)
  placement = sharding.Placement(sharding.make_mesh(num_devices),
                                 param_sharding)
  tx = optax.chain(mechanism.noise_transform(0), optax.sgd(0.5, 0.9))
  state = placement.put_state(TrainState(
      step=jnp.zeros([], jnp.int32), params=params,
      opt_state=tx.init(params)))
  train_step = steps.make_train_step(batch_loss, mechanism, tx, placement,
                                     state)
  mask = np.arange(_BATCH) < _BATCH - 3  # Three padding slots.
  with _CompileCounter() as counter:
    for i in range(3):
      batch = placement.put_batch(
          lambda rows, i=i: {'inputs': (xs[i][rows], ys[i][rows]),
                             'mask': mask[rows]}, _BATCH)
      state, _ = train_step(state, batch)
  leaves = jax.tree_util.tree_leaves(state.params)
  return {'params': np.concatenate([np.ravel(x) for x in leaves]),
          'epsilon': mechanism.epsilon(), 'compiles': counter.count}


def noise_of_zero_gradients():
  """One step on 8 devices with zero gradients: the update is pure noise."""
  shapes = {'w': (256, 128), 'b': (8_192,)}
  params = {k: jnp.zeros(s) for k, s in shapes.items()}

  def batch_loss(p, inputs):  # Ignores the parameters: zero gradients.
    return jnp.zeros(inputs.shape[0]) + 0.0 * (jnp.sum(p['w']) +
                                                jnp.sum(p['b']))

  mechanism = _mechanism(None, 'vmap', 8)
  placement = sharding.Placement(sharding.make_mesh(8))
  tx = optax.chain(mechanism.noise_transform(0), optax.sgd(1.0))
  state = placement.put_state(TrainState(
      step=jnp.zeros([], jnp.int32), params=params,
      opt_state=tx.init(params)))
  train_step = steps.make_train_step(batch_loss, mechanism, tx, placement,
                                     state)
  batch = placement.put_batch(
      lambda rows: {'inputs': np.ones((len(rows), 2), np.float32),
                    'mask': rows < 10}, _BATCH)
  state, _ = train_step(state, batch)
  moved = np.concatenate([np.ravel(x) for x in
                          jax.tree_util.tree_leaves(state.params)])
  return {'sum_of_squares': float(np.sum(moved.astype(np.float64) ** 2)),
          'count': int(moved.size),
          'expected_std': _SIGMA * _CLIP / _BATCH}


class _CompileCounter(logging.Handler):
  """Counts JAX's 'Compiling <function>' log lines for the train step."""

  def __init__(self):
    super().__init__()
    self.count = 0

  def emit(self, record):
    message = record.getMessage()
    if message.startswith('Compiling') and 'train_step' in message:
      self.count += 1

  def __enter__(self):
    logging.getLogger('jax').addHandler(self)
    jax.config.update('jax_log_compiles', True)
    return self

  def __exit__(self, *exc):
    jax.config.update('jax_log_compiles', False)
    logging.getLogger('jax').removeHandler(self)


def whole_run(num_steps):
  """train_and_evaluate on 8 devices, FSDP, accumulating microbatches."""
  with _CompileCounter() as counter, tempfile.TemporaryDirectory() as workdir:
    results = train_and_evaluate(data_parallel_run_config(
        num_steps, perf__num_devices=8, perf__param_sharding='fsdp',
        perf__microbatch_size=4), workdir, log=lambda line: None)
  return {'test_loss': results['test_loss'], 'accuracy': results['accuracy'],
          'epsilon': results['epsilon'], 'num_devices': results['num_devices'],
          'train_step_compiles': counter.count}


def audit_observations():
  """A white-box audit's view on 1 device and on 8 with FSDP (must agree)."""
  from configs import audit as audit_config
  from jaxdp import data
  from jaxdp.audit import canaries
  from jaxdp.audit import training
  config = audit_config.get_config()
  config.model.hidden_sizes = (8,)
  config.dp.target_epsilon = None
  config.dp.noise_multiplier = 1.0
  dataset = data.digits.load_digits()
  canary_set = canaries.make('gradient', 40, dataset, seed=0)
  presence = canaries.draw_presence(40, seed=0)
  seen = {}
  for devices in (1, 8):
    mechanism = build_mechanism(config.dp, config.perf,
                                dataset.num_train + 40, 10, None, 0,
                                num_devices=devices)
    trainer = training.AuditTrainer(
        config, dataset, canary_set, mechanism,
        sharding.Placement(sharding.make_mesh(devices),
                           'fsdp' if devices > 1 else 'replicated'))
    seen[devices] = trainer.run(presence, seed=3).probe_gradients
  return {'scale': float(np.max(np.abs(seen[1]))),
          'max_abs_diff': float(np.max(np.abs(seen[8] - seen[1])))}


def main():
  assert jax.device_count() == 8, 'run with 8 simulated devices'
  reference = step_results(1, 'replicated', None, 'fast')
  variants = {}
  for devices, placement, microbatch, clipping in (
      (8, 'replicated', None, 'fast'),
      (8, 'fsdp', 1, 'vmap'),  # 8 devices × 2 microbatches of 1.
      (2, 'fsdp', 4, 'ghost')):
    got = step_results(devices, placement, microbatch, clipping)
    variants[f'{devices}-{placement}-{microbatch}-{clipping}'] = {
        'max_abs_diff': float(np.max(np.abs(got['params'] -
                                            reference['params']))),
        'epsilon': got['epsilon'], 'compiles': got['compiles']}
  print(json.dumps({
      'reference_scale': float(np.max(np.abs(reference['params']))),
      'reference_epsilon': reference['epsilon'],
      'variants': variants,
      'noise': noise_of_zero_gradients(),
      'run': whole_run(5),
      'audit': audit_observations(),
      'scaling': scaling.run('mlp', (8,), batch_size=16, timed_steps=2,
                             log=lambda line: None),
  }))


if __name__ == '__main__':
  sys.exit(main())

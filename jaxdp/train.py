"""`train_and_evaluate(config, workdir)`: one DP training run, end to end.

The loop: sample a batch on the host (the mechanism's sampler), run the jitted
step (clip per example, sum, noise once, normalise by the expected batch size,
optimizer), evaluate every `eval.every_steps` on the held-out split and report
ε spent so far. Results go to stdout and `<workdir>/results.json`.
"""

import json
import math
import os
import time
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import optax

from jaxdp import data
from jaxdp import models
from jaxdp import optimizers
from jaxdp import steps
from jaxdp.errors import ConfigError
from jaxdp.mechanism import build_mechanism
from jaxdp.train_state import TrainState

# Separates the parameter-initialisation key from the noise key.
INIT_STREAM = 0x1417


def _batch_arrays(dataset: data.Dataset, batch) -> dict:
  """Gathers a sampled batch; padding slots hold zeros and mask False."""
  images = dataset.train_images[batch.indices]
  labels = dataset.train_labels[batch.indices]
  images[~batch.mask] = 0.0
  labels[~batch.mask] = 0
  return {'inputs': (images, labels), 'mask': batch.mask}


def _json_number(x: float) -> Optional[float]:
  return float(x) if math.isfinite(x) else None


def train_and_evaluate(config, workdir: str,
                       log: Callable[[str], None] = print) -> dict:
  """Trains `config` with DP and returns (and writes) its results.

  Args:
    config: a locked ConfigDict shaped like `configs/base.py`.
    workdir: directory for `results.json` and `config.json` (created).
    log: receives one progress line per evaluation.

  Returns:
    A JSON-ready dict with at least accuracy, epsilon, delta,
    noise_multiplier, steps and wall_seconds.
  """
  start = time.time()
  if not config.eval.batch_size > 0:
    raise ConfigError('eval.batch_size',
                      f'must be > 0, got {config.eval.batch_size}',
                      'set a positive evaluation batch size')
  dataset = data.load_dataset(config.data)
  mechanism = build_mechanism(config.dp, config.perf, dataset.num_train,
                              config.train.num_steps, config.train.num_epochs,
                              config.seed)
  model = models.build_model(config.model, dataset.num_classes)
  sample_input = jnp.asarray(dataset.train_images[:1])
  models.check_no_example_mixing(model, sample_input)

  init_key = jax.random.fold_in(jax.random.key(config.seed), INIT_STREAM)
  params = model.init(init_key, sample_input)['params']
  num_params = sum(x.size for x in jax.tree_util.tree_leaves(params))
  tx = optax.chain(
      mechanism.noise_transform(config.seed),  # Privatise first ...
      optimizers.build_optimizer(config.optimizer, mechanism.num_steps))  # ... then post-process.
  state = TrainState(step=jnp.zeros([], jnp.int32), params=params,
                     opt_state=tx.init(params))
  train_step = steps.make_train_step(steps.classification_loss(model.apply),
                                     mechanism, tx)
  eval_step = steps.make_eval_step(model.apply)
  eval_batch = min(config.eval.batch_size, len(dataset.test_labels))

  s = mechanism.summary()
  log(f'data {dataset.name}: {dataset.num_train} train / '
      f'{len(dataset.test_labels)} test from {dataset.source}')
  log(f'model {config.model.name}: {num_params} parameters')
  log(f'privacy: sampler {s["sampler"]} q={s["sampling_probability"]:.5g} '
      f'(expected batch {s["expected_batch_size"]:g}, padded to '
      f'{mechanism.sampler.padded_size}), C={config.dp.clip_norm:g}, '
      f'σ={s["noise_multiplier"]:.4g}, {s["steps"]} steps, '
      f'ε={s["epsilon"] if s["epsilon"] is None else round(s["epsilon"], 4)} '
      f'at δ={s["delta"]:g} ({s["accountant"]}, {s["neighboring_relation"]})')

  every = config.eval.every_steps or mechanism.num_steps
  history = []
  test_loss = accuracy = float('nan')
  for step in range(mechanism.num_steps):
    batch = _batch_arrays(dataset, mechanism.sampler.sample(step))
    state, metrics = train_step(state, batch)
    done = step + 1
    if done % every == 0 or done == mechanism.num_steps:
      test_loss, accuracy = steps.evaluate(
          eval_step, state.params, dataset.test_images, dataset.test_labels,
          eval_batch)
      eps = mechanism.epsilon(done)
      diagnostics = {k: float(v) for k, v in metrics.items()}
      history.append({
          'step': done, 'test_loss': _json_number(test_loss),
          'accuracy': _json_number(accuracy), 'epsilon': _json_number(eps),
          'wall_seconds': time.time() - start,
          # Statistics of the private batch, outside the DP guarantee.
          'non_private_diagnostics': {k: _json_number(v)
                                      for k, v in diagnostics.items()},
      })
      log(f'step {done}/{mechanism.num_steps} | test_loss {test_loss:.4f} | '
          f'accuracy {accuracy:.4f} | ε {eps:.4f} | batch_loss '
          f'{diagnostics["batch_loss"]:.4f} (not private) | clipped '
          f'{diagnostics["clipped_fraction"]:.2f} | '
          f'{time.time() - start:.1f}s')

  results = dict(s)  # The guarantee of the whole run, computed above.
  results.update({
      'accuracy': _json_number(accuracy),
      'test_loss': _json_number(test_loss),
      'dataset': dataset.name,
      'dataset_source': dataset.source,
      'num_train_examples': dataset.num_train,
      'model': config.model.name,
      'num_params': int(num_params),
      'seed': config.seed,
      'platform': jax.devices()[0].platform,
      'wall_seconds': time.time() - start,
      'history': history,
  })
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    f.write(config.to_json(indent=2))
  with open(os.path.join(workdir, 'results.json'), 'w') as f:
    json.dump(results, f, indent=2, allow_nan=False)
  return results


def final_line(results: dict) -> str:
  """The one-line JSON summary printed last (history left out)."""
  return json.dumps({k: v for k, v in results.items() if k != 'history'},
                    allow_nan=False)

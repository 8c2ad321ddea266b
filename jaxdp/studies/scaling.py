"""Examples per second of the data-parallel DP step on 1, 2, 4, ... devices.

Each device count gets the same model, the same global batch (fixed-size,
padded as training pads such batches: to whole microbatches on every device;
Poisson batches are padded further, to their overflow cap) and the same DP
step as training uses (`steps.make_train_step` with a `Placement` over the
first D devices: per-example clipping on each device's share, one `psum`, one
noise draw). Counts alternate step by step so that load on a shared machine
affects them alike; the median step is reported.

On simulated CPU devices (`XLA_FLAGS=--xla_force_host_platform_device_count=8`)
all "devices" share the same cores, so these figures measure the overhead of
splitting and reducing, not a speed-up.
"""

import statistics
import time
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxdp.studies import benchmark
from jaxdp import sharding
from jaxdp.train import step as steps
from jaxdp.train.state import TrainState


def _runner(problem, batch_size: int, num_devices: int,
            microbatch_size, param_sharding: str):
  """(run one step, compile seconds) of the DP step over D devices."""
  mechanism, tx = benchmark.dp_mechanism('fast', 1.0, batch_size,
                                         microbatch_size, num_devices)
  placement = sharding.Placement(sharding.make_mesh(num_devices),
                                 param_sharding)
  params = jax.tree_util.tree_map(jnp.array, problem.params)
  state = placement.put_state(TrainState(
      step=jnp.zeros([], jnp.int32), params=params,
      opt_state=tx.init(params)))
  step = steps.make_train_step(problem.batch_loss, mechanism, tx, placement,
                               state)
  inputs = jax.tree_util.tree_map(np.asarray, problem.inputs)

  def gather(slots):  # Training's shape: padded to whole microbatches.
    real = slots < batch_size
    rows = np.where(real, slots, 0)
    return {'inputs': jax.tree_util.tree_map(lambda x: x[rows], inputs),
            'mask': real}

  batch = placement.put_batch(gather, mechanism.sampler.padded_size)
  holder = [state]

  def run_step():
    holder[0], _ = step(holder[0], batch)
    jax.block_until_ready(holder[0])

  start = time.perf_counter()
  run_step()  # Compiles.
  return run_step, time.perf_counter() - start


def run(model: str = 'mlp', device_counts: Sequence[int] = (1, 2, 4, 8),
        batch_size: int = 256, timed_steps: int = 20, microbatch_size=None,
        param_sharding: str = 'replicated',
        log: Callable[[str], None] = print) -> dict:
  """{devices: {median_ms, examples_per_s, relative_to_1, compile_s}}."""
  available = jax.device_count()
  for count in device_counts:
    if count > available:
      raise ValueError(
          f'{count} devices, but JAX sees {available} (on CPU, simulate more '
          'with XLA_FLAGS=--xla_force_host_platform_device_count=8)')
  problem = benchmark.make_problem(model, batch_size)
  log(f'{model}: {problem.description}, global batch {batch_size}, '
      f'fast clipping, parameters {param_sharding}')
  runners = {}
  for count in device_counts:
    run_step, compile_s = _runner(problem, batch_size, count,
                                  microbatch_size, param_sharding)
    run_step()  # Untimed warm-up.
    runners[count] = {'run': run_step, 'compile_s': compile_s, 'times': []}
  for _ in range(timed_steps):
    for r in runners.values():
      start = time.perf_counter()
      r['run']()
      r['times'].append(time.perf_counter() - start)
  results = {}
  base = None
  for count, r in runners.items():
    ms = 1e3 * statistics.median(r['times'])
    rate = batch_size / (ms / 1e3)
    base = base or rate
    results[count] = {'median_ms': round(ms, 3),
                      'examples_per_s': round(rate, 1),
                      'relative_to_first': round(rate / base, 3),
                      'compile_s': round(r['compile_s'], 3)}
  return results


def table(results: dict) -> str:
  """A markdown table of `run`'s results."""
  lines = ['| devices | median ms/step | examples/s | × first row | '
           'compile s |', '|---|---|---|---|---|']
  for count, r in results.items():
    lines.append(f"| {count} | {r['median_ms']:.1f} | "
                 f"{r['examples_per_s']:.0f} | {r['relative_to_first']:.2f} | "
                 f"{r['compile_s']:.1f} |")
  return '\n'.join(lines)

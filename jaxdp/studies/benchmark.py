"""Step-time and memory of DP training steps against the non-private step.

Every method runs the *whole* training step (gradients, clipping, noise, SGD
update) on the same model, batch and machine. Methods alternate round by round
so that load on a shared machine affects them alike; the median of the timed
steps is reported. A step that follows a much heavier one (a `vmap` step
allocating hundreds of MB) runs with cold caches, so every method whose step
takes under `REWARM_BELOW_S` runs one untimed step right before each timed
one; slower steps are not affected enough to be worth the time. Memory is XLA's own account of the compiled step (argument,
output and temporary buffers), the peak it plans for, not a measurement of the
process. Opacus rows have no XLA plan, so no memory figure.

Methods:
  nonprivate        jax.grad of the mean loss, then SGD.
  vmap              materialised per-example gradients (the reference).
  vmap_microbatched vmap in microbatches (`lax.scan`): less memory.
  fast              jaxdp's default: norms and clipped sums from activations
                    and output gradients of known layers (book-keeping), vmap
                    for the rest.
  ghost             the same norms, then the clipped sum from a second
                    backward pass weighted by the clip factors.
  fast_noise_free   `fast` with σ = 0: what clipping costs without the noise
                    draw (a diagnostic, not a private step).
  fast_per_layer    `fast` with per-layer clipping (dp.clip_rule=per_layer):
                    each layer to its own bound, the same ε.
  fast_banded_mf    `fast` with banded matrix-factorisation noise, 4 bands
                    (3 parameter-sized noise buffers; docs/correlated_noise.md).
  fast_blt          `fast` with BLT noise, 4 buffers.
"""

import dataclasses
import statistics
import time
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxdp.studies import benchmark_compare
from jaxdp import models
from jaxdp.models import lora
from jaxdp.train import step as steps
from jaxdp.mechanism import build_mechanism
from jaxdp.models.transformer import next_token_loss
from jaxdp.train.state import TrainState
from jaxdp.mechanism import hand_built_dp

MODELS = ('mlp', 'cnn', 'wrn16_4', 'transformer', 'lora', 'smollm2_lora')
# Tokens per sequence of the smollm2_lora problem.
SMOLLM2_TOKENS = 128
REWARM_BELOW_S = 0.5
# DP method -> (perf.clipping, in microbatches?, noise multiplier, rule,
# noise mechanism).
_DP_METHODS = {
    'vmap': ('vmap', False, 1.0, 'global', 'gaussian'),
    'vmap_microbatched': ('vmap', True, 1.0, 'global', 'gaussian'),
    'fast': ('fast', False, 1.0, 'global', 'gaussian'),
    'ghost': ('ghost', False, 1.0, 'global', 'gaussian'),
    'fast_noise_free': ('fast', False, 0.0, 'global', 'gaussian'),
    'fast_per_layer': ('fast', False, 1.0, 'per_layer', 'gaussian'),
    'fast_banded_mf': ('fast', False, 1.0, 'global', 'banded_mf'),
    'fast_blt': ('fast', False, 1.0, 'global', 'blt'),
}
# Bands (cyclic groups) and BLT buffers of the correlated-noise rows.
MF_BANDS = MF_BUFFERS = 4
METHODS = ('nonprivate', *_DP_METHODS)


@dataclasses.dataclass
class Problem:
  name: str
  description: str
  params: object
  inputs: object  # What batch_loss takes; leading axis = batch.
  batch_loss: Callable  # Of all parameters (trained merged with frozen).
  width: int = 0  # WRN width (other models: unused).
  frozen: object = None  # Parameters not trained (LoRA's base), or None.
  tokens_per_example: int = 0  # Sequence models: for tokens per second.


def make_problem(name: str, batch_size: int, seed: int = 0,
                 wrn_width: int = 4) -> Problem:
  """A model with random data of the shapes the benchmark names."""
  kx, ky = jax.random.split(jax.random.key(seed))
  # Any parameters serve for timing; an rbg key's init compiles about 3×
  # faster on CPU than threefry's (seconds for the WRN).
  kp = jax.random.key(seed, impl='rbg')
  if name in ('mlp', 'cnn', 'wrn16_4'):
    shape = (28, 28, 1)
    if name == 'mlp':
      model = models.MLP((512,), 10, jax.nn.relu)
      description = 'MLP 784-512-10 (ReLU) on 28×28×1'
    elif name == 'cnn':
      model = models.TanhCNN(10)
      description = 'Papernot tanh CNN on 28×28×1'
    else:
      model = models.WideResNet(10, depth=16, width=wrn_width, groups=16)
      shape = (32, 32, 3)
      description = (f'WRN-16-{wrn_width} with GroupNorm (16 groups) on '
                     '32×32×3' + (' (WRN-16-4 at reduced width)'
                                  if wrn_width != 4 else ''))
    images = jax.random.normal(kx, (batch_size,) + shape)
    labels = jax.random.randint(ky, (batch_size,), 0, 10)
    params = jax.jit(model.init)(kp, images[:1])['params']
    return Problem(name, description, params, (images, labels),
                   steps.classification_loss(model.apply), wrn_width)
  if name in ('transformer', 'lora'):
    rank = 4 if name == 'lora' else 0
    model = models.TransformerLM(vocab_size=64, max_length=32, width=32,
                                 depth=2, num_heads=4, lora_rank=rank)
    tokens = jax.random.randint(kx, (batch_size, 33), 0, 64)
    params = jax.jit(model.init)(kp, tokens[:1, :-1])['params']
    description = ('causal transformer LM, 2 blocks, width 32, 32 tokens, '
                   'vocab 64')
    frozen = None
    if name == 'lora':  # Train the rank-4 adapters only; the rest is frozen.
      frozen, params = lora.split_adapters(params)
      description += ', LoRA rank 4 on every projection (adapters trained)'
    return Problem(name, description, params, tokens,
                   next_token_loss(model.apply), frozen=frozen,
                   tokens_per_example=32)
  if name == 'smollm2_lora':
    return _smollm2_lora(batch_size, kx)
  raise ValueError(f'unknown benchmark model {name!r}; use one of {MODELS}')


def _smollm2_lora(batch_size: int, key) -> Problem:
  """SmolLM2-135M-Instruct's real weights, rank-8 LoRA on every projection."""
  from jaxdp.lm import pretrained  # pylint: disable=g-import-not-at-top
  from jaxdp.lm import task as lm_task  # pylint: disable=g-import-not-at-top
  from jaxdp.models import llama  # pylint: disable=g-import-not-at-top
  loaded = pretrained.load_pretrained(pretrained.SMOLLM2, SMOLLM2_TOKENS)
  model = llama.LlamaLM(loaded.config, lora_rank=8, lora_alpha=16.0)
  adapters, frozen = lm_task.with_adapters(model, loaded.params, key)
  shape = (batch_size, SMOLLM2_TOKENS)
  tokens = jax.random.randint(key, shape, 0, loaded.config.vocab_size)
  inputs = (tokens, jnp.ones(shape, bool), jnp.ones(shape, jnp.int32))
  return Problem('smollm2_lora', f'SmolLM2-135M-Instruct (GGUF weights), '
                 f'LoRA rank 8 on all 7 projections, {SMOLLM2_TOKENS} tokens',
                 adapters, inputs, lm_task.unit_loss(model.apply),
                 frozen=frozen, tokens_per_example=SMOLLM2_TOKENS)


def dp_mechanism(clipping_method: str, noise_multiplier: float,
                 batch_size: int, microbatch_size=None, num_devices: int = 1,
                 clip_rule: str = 'global', noise_mechanism: str = 'gaussian'):
  """(mechanism, tx) of the timed DP steps: fixed-size batches (cyclic
  Poisson for correlated noise, which needs it), C = 1, SGD."""
  dp = hand_built_dp(**{
      'sampler': 'fixed_size', 'batch_size': batch_size, 'clip_norm': 1.0,
      'noise_multiplier': noise_multiplier,
      'target_epsilon': None, 'delta': 1e-5,
      'accountant': 'rdp', 'allow_large_delta': True})
  dp.clip_rule = clip_rule
  if noise_mechanism != 'gaussian':
    dp.sampler, dp.noise_mechanism = 'poisson', noise_mechanism
    dp.mf_bands, dp.mf_buffers = MF_BANDS, MF_BUFFERS
  perf = ml_collections.ConfigDict({
      'clipping': clipping_method, 'microbatch_size': microbatch_size,
      'batch_overflow_probability': 1e-3})
  mechanism = build_mechanism(dp, perf, num_examples=10 * batch_size,
                              num_steps=100, num_epochs=None, seed=0,
                              num_devices=num_devices)
  return mechanism, optax.chain(mechanism.noise_transform(0), optax.sgd(0.1))


def _dp_step(problem: Problem, method: str, batch_size: int,
             microbatch_size: int):
  clipping_method, microbatched, sigma, rule, noise = _DP_METHODS[method]
  mechanism, tx = dp_mechanism(clipping_method, sigma, batch_size,
                               microbatch_size if microbatched else None,
                               clip_rule=rule, noise_mechanism=noise)
  return steps.make_train_step(problem.batch_loss, mechanism, tx), tx


def _nonprivate_step(problem: Problem):
  tx = optax.sgd(0.1)

  def step(state, batch, frozen=None):
    mean_loss = lambda p: jnp.mean(problem.batch_loss(lora.merge(frozen, p),
                                                      batch['inputs']))
    loss, grads = jax.value_and_grad(mean_loss)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    return state.replace(step=state.step + 1,
                         params=optax.apply_updates(state.params, updates),
                         opt_state=opt_state), {'loss': loss}

  return jax.jit(step, donate_argnums=0), tx


def _memory_mb(compiled) -> float:
  stats = compiled.memory_analysis()
  if stats is None:
    return float('nan')
  total = (stats.argument_size_in_bytes + stats.output_size_in_bytes +
           stats.temp_size_in_bytes - stats.alias_size_in_bytes)
  return total / 2**20


def _jax_runner(step, tx, problem, batch):
  """(run one step, XLA peak MB, compile seconds) for a jitted step.

  The step is compiled once, ahead of time: the same executable gives the
  memory plan and runs the timed steps.
  """
  params = jax.tree_util.tree_map(jnp.array, problem.params)
  holder = [TrainState(step=jnp.zeros([], jnp.int32), params=params,
                       opt_state=tx.init(params))]
  start = time.perf_counter()
  compiled = step.lower(holder[0], batch, problem.frozen).compile()
  compile_s = time.perf_counter() - start

  def run_step():
    holder[0], _ = compiled(holder[0], batch, problem.frozen)
    jax.block_until_ready(holder[0])

  return run_step, _memory_mb(compiled), compile_s


def _compare_runner(method, problem, batch, batch_size):
  """The same triple for another library's step, or None if not runnable."""
  if problem.frozen is not None:
    if sum(x.size for x in jax.tree_util.tree_leaves(problem.frozen)) > 1e6:
      return None  # It would be baked into their step as a constant.
    problem = dataclasses.replace(
        problem, batch_loss=lora.with_frozen(problem.batch_loss,
                                             problem.frozen), frozen=None)
  if method == 'jax_privacy':
    step, tx = benchmark_compare.jax_privacy_step(problem, batch_size)
    return _jax_runner(step, tx, problem, batch)
  run_step = benchmark_compare.opacus_step(
      problem, batch_size, 'ghost' if method == 'opacus_ghost' else 'hooks')
  if run_step is None:
    return None
  start = time.perf_counter()
  run_step()  # Warms up PyTorch.
  return run_step, float('nan'), time.perf_counter() - start


def run(model_names=MODELS, methods=METHODS, batch_size: int = 256,
        timed_steps: int = 20, microbatch_size: int = 32,
        compare: bool = False, log: Callable[[str], None] = print,
        wrn_width: int = 4) -> dict:
  """Times every method on every model; returns {model: {method: stats}}.

  With `compare`, also jax_privacy and Opacus where they are installed (see
  `jaxdp.benchmark_compare`); methods that cannot run are left out and said.
  """
  results = {}
  extra = []
  if compare:
    found = benchmark_compare.available()
    extra = [m for m in benchmark_compare.COMPARE_METHODS if found[m]]
    missing = [m for m in benchmark_compare.COMPARE_METHODS if not found[m]]
    if missing:
      log(f'skipped (not installed; pip install -e .[compare]): {missing}')
  for name in model_names:
    problem = make_problem(name, batch_size, wrn_width=wrn_width)
    batch = {'inputs': problem.inputs, 'mask': jnp.ones(batch_size, bool)}
    num_params = sum(x.size for x in jax.tree_util.tree_leaves(problem.params))
    log(f'{name}: {problem.description}, {num_params:,} parameters, '
        f'batch {batch_size}')
    runners = {}
    for method in list(methods) + extra:
      if method in METHODS:
        step, tx = (_nonprivate_step(problem) if method == 'nonprivate' else
                    _dp_step(problem, method, batch_size, microbatch_size))
        runner = _jax_runner(step, tx, problem, batch)
      else:
        runner = _compare_runner(method, problem, batch, batch_size)
        if runner is None:
          log(f'  {method}: no equivalent model, skipped')
          continue
      run_step, memory, compile_s = runner
      start = time.perf_counter()
      run_step()  # One untimed warm-up step.
      rewarm = time.perf_counter() - start < REWARM_BELOW_S
      runners[method] = {'run': run_step, 'times': [], 'memory': memory,
                         'compile_s': compile_s, 'rewarm': rewarm}
    for _ in range(timed_steps):  # Round-robin: alternate the methods.
      for r in runners.values():
        if r['rewarm']:
          r['run']()
        start = time.perf_counter()
        r['run']()
        r['times'].append(time.perf_counter() - start)
    base = runners.get('nonprivate')
    base_ms = 1e3 * statistics.median(base['times']) if base else None
    base_mb = base['memory'] if base else None
    results[name] = {}
    for method, r in runners.items():
      ms = 1e3 * statistics.median(r['times'])
      known_memory = r['memory'] == r['memory']  # Not NaN.
      results[name][method] = {
          'median_ms': round(ms, 3),
          'ratio_to_nonprivate': round(ms / base_ms, 3) if base_ms else None,
          'peak_memory_mb': round(r['memory'], 3) if known_memory else None,
          'memory_ratio_to_nonprivate': (
              round(r['memory'] / base_mb, 3)
              if base_mb and known_memory else None),
          'compile_s': round(r['compile_s'], 3),
          'examples_per_s': round(batch_size / (ms / 1e3), 1),
          'tokens_per_s': round(batch_size * problem.tokens_per_example /
                                (ms / 1e3), 1),
      }
  return results


def table(results: dict) -> str:
  """A markdown table of `run`'s results."""
  lines = ['| model | method | median ms/step | × non-private | examples/s | '
           'tokens/s | XLA peak MB | × non-private memory | compile s |',
           '|---|---|---|---|---|---|---|---|---|']
  for model, by_method in results.items():
    for method, r in by_method.items():
      ratio = '' if r['ratio_to_nonprivate'] is None else (
          f"{r['ratio_to_nonprivate']:.2f}")
      mem_ratio = '' if r['memory_ratio_to_nonprivate'] is None else (
          f"{r['memory_ratio_to_nonprivate']:.2f}")
      memory = ('–' if r['peak_memory_mb'] is None else
                f"{r['peak_memory_mb']:.1f}")
      lines.append(f"| {model} | {method} | {r['median_ms']:.1f} | {ratio} | "
                   f"{r['examples_per_s']:.0f} | "
                   f"{r['tokens_per_s'] or '–'} | {memory} | "
                   f'{mem_ratio} | {r["compile_s"]:.1f} |')
  return '\n'.join(lines)

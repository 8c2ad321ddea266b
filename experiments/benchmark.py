"""Times DP training steps against the non-private step.

  python -m experiments.benchmark --models=mlp,cnn,transformer --batch_size=256

Prints a markdown table, then as its last line one JSON object
{model: {method: {median_ms, ratio_to_nonprivate, peak_memory_mb, ...}}}.

  python -m experiments.benchmark --accounting [--schedule_steps=10000]

times accounting a noise schedule with a distinct σ per step instead:
jaxdp's vectorised RDP against dp-accounting, with their ε side by side.
"""

import datetime
import json
import platform

from absl import app
from absl import flags
import jax

from jaxdp.studies import accounting_benchmark
from jaxdp.studies import benchmark

_MODELS = flags.DEFINE_list('models', list(benchmark.MODELS),
                            f'Any of {", ".join(benchmark.MODELS)}.')
_METHODS = flags.DEFINE_list('methods', list(benchmark.METHODS),
                             f'Any of {", ".join(benchmark.METHODS)}.')
_BATCH = flags.DEFINE_integer('batch_size', 256, 'Examples per step.')
_STEPS = flags.DEFINE_integer('steps', 20, 'Timed steps per method (≥ 20 '
                              'for reported figures).')
_MICROBATCH = flags.DEFINE_integer('microbatch_size', 32,
                                   'Microbatch of vmap_microbatched.')
_WRN_WIDTH = flags.DEFINE_integer(
    'wrn_width', 4, 'Width of the wrn16_4 model: 4 is WRN-16-4 (De et al. '
    '2022); a smaller width keeps CPU runs short, and the table says so.')
_COMPARE = flags.DEFINE_bool('compare', True,
                             'Also time jax_privacy and Opacus where '
                             'installed (pip install -e .[compare]).')

_ACCOUNTING = flags.DEFINE_bool('accounting', False, 'Time the accounting '
                                'of a per-step noise schedule instead.')
_SCHEDULE_STEPS = flags.DEFINE_integer('schedule_steps', 10_000,
                                       '--accounting: steps of the schedule.')


def main(argv):
  del argv
  if _ACCOUNTING.value:
    print(f'{datetime.date.today()} | {platform.machine()} '
          f'{platform.processor() or "cpu"}', flush=True)
    results = accounting_benchmark.run(_SCHEDULE_STEPS.value)
    print(accounting_benchmark.table(results))
    print(json.dumps(results))
    return
  for name in _MODELS.value:
    if name not in benchmark.MODELS:
      raise app.UsageError(f'--models: unknown {name!r}; use '
                           f'{",".join(benchmark.MODELS)}')
  if _WRN_WIDTH.value < 1:
    raise app.UsageError(f'--wrn_width: must be ≥ 1, got {_WRN_WIDTH.value}')
  for name in _METHODS.value:
    if name not in benchmark.METHODS:
      raise app.UsageError(f'--methods: unknown {name!r}; use '
                           f'{",".join(benchmark.METHODS)}')
  device = jax.devices()[0]
  print(f'{datetime.date.today()} | {platform.machine()} '
        f'{device.platform} ({device.device_kind}), {jax.device_count()} '
        f'device(s) | jax {jax.__version__}', flush=True)
  results = benchmark.run(_MODELS.value, _METHODS.value, _BATCH.value,
                          _STEPS.value, _MICROBATCH.value, _COMPARE.value,
                          log=lambda line: print(line, flush=True),
                          wrn_width=_WRN_WIDTH.value)
  print(benchmark.table(results))
  print('Not measured here: Opacus on the transformer and LoRA (no PyTorch '
        'twin of those models).')
  print(json.dumps(results))


if __name__ == '__main__':
  app.run(main)

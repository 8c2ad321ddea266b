"""Examples/s of the data-parallel DP step on 1, 2, 4, 8 devices.

  XLA_FLAGS=--xla_force_host_platform_device_count=8 \
      python -m experiments.scaling --model=mlp --devices=1,2,4,8

On a CPU the XLA flag simulates 8 devices on the same cores: the figures then
measure the overhead of splitting the batch and adding the devices' sums, not
a speed-up. On GPUs or TPUs leave XLA_FLAGS unset. Prints a markdown table,
then as its last line one JSON object {devices: {median_ms, examples_per_s,
relative_to_first, compile_s}}.
"""

import datetime
import json
import platform

from absl import app
from absl import flags
import jax

from jaxdp.studies import benchmark
from jaxdp.studies import scaling
from jaxdp import sharding

_MODEL = flags.DEFINE_enum('model', 'mlp', benchmark.MODELS, 'Model to time.')
_DEVICES = flags.DEFINE_list('devices', ['1', '2', '4', '8'],
                             'Device counts to compare.')
_BATCH = flags.DEFINE_integer('batch_size', 256, 'Global examples per step.')
_STEPS = flags.DEFINE_integer('steps', 20, 'Timed steps per device count.')
_MICROBATCH = flags.DEFINE_integer('microbatch_size', None,
                                   'Per-device microbatch (accumulation).')
_PARAMS = flags.DEFINE_enum('param_sharding', 'replicated',
                            sharding.PARAM_SHARDINGS, 'Parameter layout.')


def main(argv):
  del argv
  try:
    counts = [int(c) for c in _DEVICES.value]
  except ValueError as e:
    raise app.UsageError(f'--devices: integers, got {_DEVICES.value}') from e
  device = jax.devices()[0]
  print(f'{datetime.date.today()} | {platform.machine()} {device.platform} '
        f'({device.device_kind}), {jax.device_count()} device(s) | jax '
        f'{jax.__version__}', flush=True)
  try:
    results = scaling.run(_MODEL.value, counts, _BATCH.value, _STEPS.value,
                          _MICROBATCH.value, _PARAMS.value,
                          log=lambda line: print(line, flush=True))
  except ValueError as e:
    raise app.UsageError(f'--devices: {e}') from e
  print(scaling.table(results))
  if device.platform == 'cpu' and jax.device_count() > 1:
    print('Simulated CPU devices share the same cores: this is overhead, '
          'not speed-up.')
  print(json.dumps(results))


if __name__ == '__main__':
  app.run(main)

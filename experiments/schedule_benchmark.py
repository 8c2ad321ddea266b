"""Noise schedules (and adaptive clipping), or clip rules, at equal ε.

  python -m experiments.schedule_benchmark --config=configs/base.py \\
      --seeds=5 [--final_ratio=0.5] [--config.dp.accountant=rdp]
  python -m experiments.schedule_benchmark --config=configs/base.py \\
      --seeds=5 --compare=clip_rules

Trains the config once per variant and seed through the real trainer: a
constant σ; linear, exponential, cosine and step schedules from σ to
σ × final_ratio; and a constant σ with adaptive clipping at the median. Each
is calibrated to the config's dp.target_epsilon. Prints a line per run, then
a Markdown table (test accuracy mean ± 95% CI, paired difference to the
constant σ); the last line is one JSON object with the rows.
--compare=clip_rules trains global clipping, then per-layer clipping with
the equal and the by-parameters split, instead. --compare=noise_mechanisms
trains DP-SGD, banded MF with --mf_bands bands and BLT with --mf_buffers
buffers (both over --mf_bands cyclic groups, so --mf_bands ≤ N / batch).
"""

import json
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from experiments.flag_parsing import parse_flags
from experiments.flag_parsing import quiet_logs
from jaxdp.studies import schedule_comparison
from jaxdp.errors import ConfigError

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'The training config, e.g. configs/base.py.',
    lock_config=True)
flags.mark_flags_as_required(['config'])
_SEEDS = flags.DEFINE_integer('seeds', 5, 'Runs per variant (seeds 0, 1, '
                              '...).')
_COMPARE = flags.DEFINE_enum('compare', 'schedules',
                             ['schedules', 'clip_rules',
                              'noise_mechanisms'],
                             'What to compare: noise schedules and adaptive '
                             'clipping, clip rules, or independent and '
                             'correlated noise.')
_BANDS = flags.DEFINE_integer('mf_bands', 4, 'noise_mechanisms: bands and '
                              'cyclic groups of banded MF and BLT.')
_BUFFERS = flags.DEFINE_integer('mf_buffers', 4, 'noise_mechanisms: BLT '
                                'buffers.')
_RATIO = flags.DEFINE_float('final_ratio', 0.5, 'σ at the end over σ at the '
                            'start, for every schedule.')


def main(argv):
  del argv
  quiet_logs()
  try:
    chosen = {
        'schedules': lambda: schedule_comparison.variants(_RATIO.value),
        'clip_rules': schedule_comparison.clip_rule_variants,
        'noise_mechanisms': lambda: (
            schedule_comparison.noise_mechanism_variants(_BANDS.value,
                                                         _BUFFERS.value)),
    }[_COMPARE.value]()
    rows = schedule_comparison.compare(
        _CONFIG.value, chosen,
        range(_SEEDS.value), log=lambda line: print(line, flush=True))
  except ConfigError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  print(schedule_comparison.table(rows))
  print(json.dumps({'rows': rows}), flush=True)


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)

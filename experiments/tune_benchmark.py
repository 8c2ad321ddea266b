"""QIEA vs random vs grid search at equal trials and equal total ε.

  python -m experiments.tune_benchmark --config=configs/tune.py --seeds=10 \\
      [--trials=8] [--strategies=random,grid,qiea]

Prints a line per search, then a Markdown table: per strategy the total and
per-trial ε, and the released model's test accuracy (mean ± 95% CI over the
seeds, and the paired difference to random search). The last line printed
is one JSON object with the rows. It evaluates the strategies and releases
nothing: it shows what a release keeps hidden (random search's K), and
runs many searches on the same data.
"""

import json
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from experiments.flag_parsing import parse_flags
from experiments.flag_parsing import quiet_logs
from jaxdp.errors import ConfigError
from jaxdp.studies import tuning_comparison as comparison
from jaxdp.tuning import run
from jaxdp.tuning import search

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'The tuning config (dp.target_epsilon: each search\'s '
    'total budget), e.g. configs/tune.py.', lock_config=True)
flags.mark_flags_as_required(['config'])
_SEEDS = flags.DEFINE_integer('seeds', 10, 'Searches per strategy (seeds '
                              '0, 1, ...).')
_TRIALS = flags.DEFINE_integer('trials', run.TuneSettings().trials,
                               'Trials per search (random: expected).')
_STRATEGIES = flags.DEFINE_list('strategies', list(search.STRATEGIES),
                                'Strategies to compare.')


def main(argv):
  del argv
  quiet_logs()
  try:
    if _SEEDS.value < 1:
      raise ConfigError('--seeds', f'must be >= 1, got {_SEEDS.value}',
                        'compare over at least one seed (10 or more for '
                        'an interval worth reading)')
    settings = [run.TuneSettings(strategy=s, trials=_TRIALS.value)
                for s in _STRATEGIES.value]
    for s in settings:
      run.check(s)
    defaults = run.TuneSettings()
    tuner = run.Tuner(_CONFIG.value, defaults.score_noise)
  except ConfigError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  rows = comparison.compare(tuner, settings, range(_SEEDS.value),
                            log=lambda line: print(line, flush=True))
  print(comparison.table(rows))
  print(json.dumps({'rows': rows}), flush=True)


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)

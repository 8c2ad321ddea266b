"""Private hyperparameter search; the ε it reports includes the search.

  python -m experiments.tune --config=configs/tune.py --workdir=/tmp/tune \\
      --strategy={random,grid,qiea} --trials=8 [--shape=1] [--seed=0]

Prints one line per trial of grid and qiea (its candidate, σ and noisy
score; random search shows only what it releases), the released
configuration with its test accuracy, and the total (ε, δ) of the search.
Writes <workdir>/tune.json. The last line printed is one JSON object with
best_accuracy, epsilon_total, epsilon_per_trial, trials (E[K] for random
search) and strategy.
Exit status 0, or 2 for bad input.
"""

import json
import math
import os
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from experiments.flag_parsing import parse_flags
from experiments.flag_parsing import quiet_logs
from jaxdp.errors import ConfigError
from jaxdp.mechanism import MAX_CONFIG_SEED
from jaxdp.tuning import run
from jaxdp.tuning import search

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'An image-classification config; dp.target_epsilon is '
    'the whole search\'s budget (e.g. configs/tune.py).', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Where tune.json goes.')
flags.mark_flags_as_required(['config', 'workdir'])
_DEFAULTS = run.TuneSettings()
_STRATEGY = flags.DEFINE_enum('strategy', _DEFAULTS.strategy,
                              search.STRATEGIES, 'How candidates are chosen.')
_TRIALS = flags.DEFINE_integer('trials', _DEFAULTS.trials,
                               'Trials (random: their expected number).')
_SHAPE = flags.DEFINE_float('shape', _DEFAULTS.shape, 'random: η of the '
                            'truncated negative binomial number of trials '
                            '(1 = geometric; inf = Poisson).')
_SCORE_NOISE = flags.DEFINE_float('score_noise', _DEFAULTS.score_noise,
                                  'σ_s of each trial\'s noisy count of '
                                  'correct training predictions.')
_POPULATION = flags.DEFINE_integer('population', _DEFAULTS.population,
                                   'qiea: individuals per generation.')
_DELTA_THETA = flags.DEFINE_float('qiea_delta_theta',
                                  _DEFAULTS.qiea_delta_theta,
                                  'qiea: rotation step, in units of π.')
_SEED = flags.DEFINE_integer('seed', None, 'Search seed (default: the '
                             'config\'s seed); with dp.secure_noise it seeds '
                             'the initialisations only.')
_SPACE = {name: flags.DEFINE_list(
    name, [f'{v:g}' for v in getattr(run.SearchSpace(), name)],
    f'Candidate values of {name}.') for name in run.SPACE_NAMES}


def _space() -> run.SearchSpace:
  values = {}
  for name, flag in _SPACE.items():
    try:
      values[name] = tuple(int(v) if name == 'batch_size' else float(v)
                           for v in flag.value)
    except ValueError as e:
      raise ConfigError(f'--{name}', f'not a list of numbers ({e})',
                        f'e.g. --{name}={",".join(flag.default)}') from e
  return run.SearchSpace(**values)


def main(argv):
  del argv
  quiet_logs()
  settings = run.TuneSettings(
      strategy=_STRATEGY.value, trials=_TRIALS.value, shape=_SHAPE.value,
      score_noise=_SCORE_NOISE.value, population=_POPULATION.value,
      qiea_delta_theta=_DELTA_THETA.value)
  config = _CONFIG.value
  seed = config.seed if _SEED.value is None else _SEED.value
  if not 0 <= seed <= MAX_CONFIG_SEED:
    print(f'error: --seed: must be in [0, {MAX_CONFIG_SEED}], got {seed}. '
          'Fix: use a non-negative seed, or dp.secure_noise for secret ones',
          file=sys.stderr)
    sys.exit(2)
  log = lambda line: print(line, flush=True)
  try:
    run.check(settings)
    tuner = run.Tuner(config, settings.score_noise, _space())
    results = tuner.search(settings, seed, log=log)
  except ConfigError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  os.makedirs(_WORKDIR.value, exist_ok=True)
  with open(os.path.join(_WORKDIR.value, 'tune.json'), 'w') as f:
    json.dump(results, f, indent=1)
  print(run.describe(results))
  line = {k: v for k, v in results.items() if k != 'privacy_plan'}
  print(json.dumps({k: (None if isinstance(v, float) and not math.isfinite(v)
                        else v) for k, v in line.items()}), flush=True)


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)

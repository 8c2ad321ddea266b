"""Trains a model with DP-SGD (or any optax optimizer after DP aggregation).

  python -m experiments.train --config=configs/base.py --workdir=/tmp/jaxdp \
      --config.dp.target_epsilon=1

Prints progress, then as its last line one JSON object (also written to
<workdir>/results.json).
"""

import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from jaxdp.errors import ConfigError
from jaxdp.train import final_line
from jaxdp.train import train_and_evaluate

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Path to a config file, e.g. configs/base.py.',
    lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None,
                               'Directory for results.json and config.json.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  del argv
  try:
    results = train_and_evaluate(_CONFIG.value, _WORKDIR.value,
                                 log=lambda line: print(line, flush=True))
  except ConfigError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  print(final_line(results), flush=True)


if __name__ == '__main__':
  app.run(main)

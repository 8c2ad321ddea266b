"""Trains a model with DP-SGD (or any optax optimizer after DP aggregation).

  python -m experiments.train --config=configs/base.py --workdir=/tmp/jaxdp \
      --config.dp.target_epsilon=1

Prints progress, then as its last line one JSON object (also written to
<workdir>/results.json). Rerunning the command on the same workdir resumes the
run from its newest checkpoint (or reports it again if it had finished).

On several hosts, run the same command on every host with --distributed
(JAX reads the cluster from SLURM, Open MPI or a Cloud TPU pod slice), or with
--coordinator_address=host0:port --num_processes=N --process_id=i.
docs/scale_out.md shows both.

Exit status: 0 when the run completed or stopped at its privacy budget, 2 for
bad settings, 75 when SIGTERM/SIGINT stopped it (a checkpoint was saved: rerun
to resume), 1 when it diverged beyond recovery.
"""

import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from jaxdp import distributed
from jaxdp.errors import ConfigError
from experiments.flag_parsing import parse_flags
from experiments.flag_parsing import quiet_logs
from jaxdp.train import EXIT_STATUS
from jaxdp.train import final_line
from jaxdp.train import train_and_evaluate

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Path to a config file, e.g. configs/base.py.',
    lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None,
                               'Directory for results.json and config.json.')
flags.mark_flags_as_required(['config', 'workdir'])
_DISTRIBUTED = flags.DEFINE_bool(
    'distributed', False, 'Join a multi-host run whose layout JAX reads from '
    'the environment (SLURM, Open MPI, Cloud TPU pod slices).')
_COORDINATOR = flags.DEFINE_string(
    'coordinator_address', '', 'host:port of process 0 in a multi-host run '
    '(with --num_processes and --process_id).')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', 0,
                                      'Processes in a multi-host run.')
_PROCESS_ID = flags.DEFINE_integer('process_id', -1,
                                   'This process\'s index in a multi-host run.')


def main(argv):
  del argv
  quiet_logs()  # orbax logs every save at INFO.
  try:
    if _DISTRIBUTED.value or _COORDINATOR.value:
      distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value,
                             _PROCESS_ID.value)
    results = train_and_evaluate(_CONFIG.value, _WORKDIR.value,
                                 log=lambda line: print(line, flush=True))
  except ConfigError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  if distributed.is_primary():
    print(final_line(results), flush=True)
  sys.exit(EXIT_STATUS[results['status']])


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)

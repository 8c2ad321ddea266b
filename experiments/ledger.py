"""Checks a run's privacy ledger: the hash chain and the ε it records.

  python -m experiments.ledger verify /tmp/jaxdp

Recomputes every entry's hash, checks that accounted segments follow each
other, re-runs the accountant on the logged DpEvents, and checks the entry the
newest checkpoint recorded is still there. Prints a JSON summary and exits 0,
or names the first bad line and exits 1 (2 when there is no ledger).
"""

import json
import os
import sys

from absl import app

from experiments.flag_parsing import quiet_logs
from jaxdp.train import ledger
from jaxdp.errors import ConfigError


def main(argv):
  quiet_logs()  # orbax logs every read at INFO.
  if len(argv) != 3 or argv[1] != 'verify':
    print('usage: python -m experiments.ledger verify <workdir>',
          file=sys.stderr)
    sys.exit(2)
  workdir = argv[2]
  try:
    report = ledger.verify_workdir(workdir)
  except FileNotFoundError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  except (ledger.LedgerError, ConfigError) as e:
    print(f'ledger {os.path.join(workdir, ledger.FILENAME)}: {e}',
          file=sys.stderr)
    print('TAMPERED OR DAMAGED', file=sys.stderr)
    sys.exit(1)
  print(json.dumps(report), flush=True)


if __name__ == '__main__':
  app.run(main)

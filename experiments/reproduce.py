"""Reproduces a DP paper's table: its numbers beside ours.

  python -m experiments.reproduce --paper=tramer_boneh2021 --accounting_only
  python -m experiments.reproduce --paper=tramer_boneh2021 \
      --rows=mnist_cnn --seeds=3 --data_dir=/path/to/data
  python -m experiments.reproduce --paper=abadi2016 --quick

Papers: abadi2016, papernot2021, tramer_boneh2021, de2022 (each a file in
configs/, whose docstring gives the settings and every deviation).

--accounting_only recomputes each row's ε (or σ) the way the paper accounted,
beside jaxdp's ε for the row's config; seconds, offline, no data.
--quick runs every row for two steps on stand-in data in the real file
formats. Otherwise each row trains for real on the data in --data_dir (a
folder holding mnist/, fashion_mnist/, cifar10/ with the published files),
one workdir per row and seed under --workdir (rerunning resumes).

Prints a markdown table and writes it, with the full results as JSON, to
<workdir>/<paper>_{results,accounting}.{md,json}.
"""

import importlib
import os
import sys

from absl import app
from absl import flags

from experiments.flag_parsing import quiet_logs
from jaxdp.studies import reproduce
from jaxdp.errors import ConfigError

_PAPER = flags.DEFINE_enum('paper', None, reproduce.PAPERS,
                           'Which paper\'s table.')
flags.mark_flag_as_required('paper')
_ROWS = flags.DEFINE_list('rows', [], 'Rows to run (default: all).')
_SEEDS = flags.DEFINE_integer('seeds', 1, 'Seeds per row (0, 1, ...).')
_QUICK = flags.DEFINE_bool('quick', False,
                           'Two steps a row on stand-in data.')
_ACCOUNTING_ONLY = flags.DEFINE_bool(
    'accounting_only', False, 'Only recompute ε/σ of every row.')
_DATA_DIR = flags.DEFINE_string('data_dir', '',
                                'Folder with the datasets\' original files.')
_WORKDIR = flags.DEFINE_string('workdir', '/tmp/jaxdp_reproduce',
                               'Where runs, tables and JSON go.')


def main(argv):
  del argv
  quiet_logs()
  paper = importlib.import_module(f'configs.{_PAPER.value}')
  kind = ('accounting' if _ACCOUNTING_ONLY.value
          else 'quick' if _QUICK.value else 'results')
  stem = os.path.join(_WORKDIR.value, f'{_PAPER.value}_{kind}')

  def save(table, text):
    reproduce.write_json(stem + '.json', table)
    with open(stem + '.md', 'w') as f:
      f.write(text + '\n')

  try:
    rows = reproduce.select_rows(paper, _ROWS.value)
    if _SEEDS.value < 1:
      raise ConfigError('seeds', f'must be ≥ 1, got {_SEEDS.value}',
                        'pass --seeds=1 or more')
    if _ACCOUNTING_ONLY.value:
      table = reproduce.accounting_table(paper, rows)
      text = reproduce.accounting_markdown(table)
    else:
      to_text = lambda t: reproduce.results_markdown(t, reproduce.today())
      table = reproduce.run_rows(
          paper, _PAPER.value, rows, _SEEDS.value, _WORKDIR.value,
          _DATA_DIR.value, _QUICK.value,
          log=lambda line: print(line, flush=True),
          row_done=lambda t: save(t, to_text(t)))
      text = to_text(table)
  except ConfigError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  save(table, text)
  print(text)
  if not _ACCOUNTING_ONLY.value and any(s['not_run'] for s in table):
    sys.exit(3)  # Some rows could not run (the table says why).


if __name__ == '__main__':
  app.run(main)

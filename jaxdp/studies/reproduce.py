"""Runs the rows of a paper's table and sets them beside the paper's numbers.

A paper is a config module (`configs/<paper>.py`) with `ROWS` (name ->
`paper_tables.PaperRow`) and `get_config(row)`. Three ways to use it:

* `accounting_table`: for each row, the paper's (σ, steps, ε) recomputed the
  way the paper accounted, beside what jaxdp's mechanism gives for the row's
  config. Seconds, no data.
* `run_rows(..., quick=True)`: every row for two steps on stand-in data
  written in the real file formats (tests and CI use this).
* `run_rows`: the real runs, one per row and seed, each with its own workdir
  (rerunning resumes or reports a finished run), on the data in `data_dir`.
"""

import json
import math
import os
import platform
import time
from typing import Callable, Optional, Sequence

import jax
import numpy as np

from jaxdp.studies import paper_tables
from jaxdp.train import loop as train
from jaxdp.data import stand_in_files
from jaxdp.errors import ConfigError
from jaxdp.errors import MissingDataError
from jaxdp.mechanism import build_mechanism

# The papers with a config file in configs/ (`configs/<name>.py`).
PAPERS = ('abadi2016', 'papernot2021', 'tramer_boneh2021', 'de2022')

# Size of the stand-in datasets and of the batches of a quick run.
QUICK_TRAIN, QUICK_TEST, QUICK_BATCH, QUICK_STEPS = 256, 64, 32, 2


def select_rows(paper, rows: Sequence[str]) -> list:
  """The named rows (all if none are named), in the paper's order."""
  if not rows:
    return list(paper.ROWS)
  unknown = [r for r in rows if r not in paper.ROWS]
  if unknown:
    raise ConfigError('rows', f'unknown rows {", ".join(unknown)}',
                      f'use some of {", ".join(paper.ROWS)}')
  return [r for r in paper.ROWS if r in rows]


def hardware() -> str:
  """The device the runs use, in words."""
  device = jax.devices()[0]
  if device.platform == 'cpu':
    return f'{os.cpu_count()}-core {platform.machine()} CPU'
  return f'{jax.device_count()}× {device.device_kind}'


def ours_accounting(config, row: paper_tables.PaperRow) -> dict:
  """(σ, steps, ε) of the row's config under jaxdp's own mechanism."""
  mechanism = build_mechanism(config.dp, config.perf, row.num_examples,
                              config.train.num_steps, config.train.num_epochs,
                              seed=0)
  return {'sigma': mechanism.noise_multiplier, 'steps': mechanism.num_steps,
          'epsilon': mechanism.epsilon(), 'delta': mechanism.delta,
          'accountant': mechanism.accountant}


def accounting_table(paper, rows: Sequence[str]) -> list:
  """One dict a row: the paper's row, its accounting, and ours."""
  out = []
  for name in rows:
    row = paper.ROWS[name]
    out.append({'row': name, 'paper': _row_json(row),
                'paper_accounting': paper_tables.paper_accounting(row),
                'ours': ours_accounting(paper.get_config(name), row)})
  return out


def quick_config(config, data_dir: str):
  """`config` shrunk to a two-step run on stand-in data in `data_dir`.

  Wide ResNets shrink to WRN-10-1 (same blocks, norms and strides; compiling
  WRN-40-4 alone takes minutes on a CPU). Their full size is tested in
  tests/test_wide_resnet.py.
  """
  config.data.data_dir = data_dir
  config.data.source = 'files'
  config.dp.batch_size = QUICK_BATCH
  config.train.num_steps = QUICK_STEPS
  config.eval.every_steps = 0
  if config.perf.microbatch_size is not None:  # Still accumulate: 2 chunks.
    config.perf.microbatch_size = QUICK_BATCH // 2
  if config.model.name == 'wide_resnet':
    config.model.depth, config.model.width = 10, 1
  return config


def run_rows(paper, paper_name: str, rows: Sequence[str], seeds: int,
             workdir: str, data_dir: str = '', quick: bool = False,
             log: Callable[[str], None] = print,
             row_done: Optional[Callable[[list], None]] = None) -> list:
  """Trains every row for `seeds` seeds; one summary dict a row.

  A row whose data is missing is reported as not run (with the reason), and
  the other rows go on; any other bad setting raises its ConfigError.
  `row_done` receives the summaries so far after each row (so that a long
  table is saved as it grows).
  """
  if quick:
    data_dir = os.path.join(workdir, 'stand_in_data')
    for dataset in sorted({paper.ROWS[r].dataset for r in rows}):
      if not os.path.isdir(os.path.join(data_dir, dataset)):
        stand_in_files.write_stand_in(dataset, data_dir, QUICK_TRAIN,
                                      QUICK_TEST)
  summaries = []
  for name in rows:
    runs, error = [], None
    for seed in range(seeds):
      config = paper.get_config(name)
      config.seed = seed
      if quick:
        config = quick_config(config, data_dir)
      elif data_dir:
        config.data.data_dir = data_dir
      run_dir = os.path.join(workdir, paper_name, name, f'seed{seed}')
      log(f'== {paper_name} {name} seed {seed}: {run_dir}')
      try:
        runs.append(train.train_and_evaluate(config, run_dir, log))
      except MissingDataError as e:  # Other bad settings stop the command.
        error = str(e)
        log(f'not run: {error}')
        break
    summaries.append(_summary(name, paper.ROWS[name], runs, error))
    if row_done is not None:
      row_done(summaries)
  return summaries


def _row_json(row: paper_tables.PaperRow) -> dict:
  out = dict(vars(row))
  out['orders'] = None if row.orders is None else 'custom'
  out['releases'] = [list(r) for r in row.releases]
  return out


def _summary(name: str, row: paper_tables.PaperRow, runs: list,
             error: Optional[str]) -> dict:
  accuracies = [100 * r['accuracy'] for r in runs
                if r['accuracy'] is not None]
  return {
      'row': name,
      'paper': _row_json(row),
      'seeds': len(runs),
      'accuracy_mean': float(np.mean(accuracies)) if accuracies else None,
      'accuracy_std': (float(np.std(accuracies, ddof=1))
                       if len(accuracies) > 1 else None),
      # A non-private run records ε = null (∞).
      'epsilon': (None if any(r['epsilon'] is None for r in runs)
                  else max((r['epsilon'] for r in runs), default=None)),
      'delta': runs[0]['delta'] if runs else None,
      'noise_multiplier': runs[0]['noise_multiplier'] if runs else None,
      'steps': runs[0]['steps'] if runs else None,
      'status': sorted({r['status'] for r in runs}),
      'wall_seconds': (float(np.mean([r['wall_seconds'] for r in runs]))
                       if runs else None),
      'hardware': hardware(),
      'not_run': error,
  }


def _number(x, digits: int) -> str:
  if x is None or (isinstance(x, float) and not math.isfinite(x)):
    return '–'
  return f'{x:.{digits}f}'


def results_markdown(summaries: list, date: str) -> str:
  """The paper's accuracy beside ours, one line a row."""
  lines = ['| row | paper | ours | seeds | ε (paper / ours) | δ | σ | steps '
           '| wall time | notes |', '|---|---|---|---|---|---|---|---|---|---|']
  for s in summaries:
    paper = s['paper']
    if s['not_run']:
      ours = f'not run: {s["not_run"]}'
    else:
      ours = _number(s['accuracy_mean'], 1) + '%'
      if s['accuracy_std'] is not None:
        ours += f' ± {s["accuracy_std"]:.1f}'
      unfinished = [status for status in s['status'] if status != 'completed']
      if unfinished:  # Interrupted, diverged or stopped by the budget.
        ours += f' ({", ".join(unfinished)})'
    wall = ('–' if s['wall_seconds'] is None
            else f'{s["wall_seconds"] / 60:.1f} min')
    lines.append(
        f'| {s["row"]} | {paper["accuracy"]:.1f}% | {ours} | {s["seeds"]} | '
        f'{paper["epsilon"]:g} / {_number(s["epsilon"], 3)} | '
        f'{paper["delta"]:g} | {_number(s["noise_multiplier"], 3)} | '
        f'{s["steps"] if s["steps"] is not None else "–"} | {wall} | '
        f'{paper["notes"] or "–"} |')
  hardware_used = sorted({s['hardware'] for s in summaries})
  lines.append(f'\n{date}, {", ".join(hardware_used)}.')
  return '\n'.join(lines)


def accounting_markdown(table: list) -> str:
  """The paper's accounting recomputed, beside jaxdp's for the config."""
  lines = ['| row | paper σ | paper steps | paper ε | recomputed ε (paper\'s '
           'accountant) | our σ | our steps | our ε | δ | notes |',
           '|---|---|---|---|---|---|---|---|---|---|']
  for entry in table:
    paper, acc, ours = entry['paper'], entry['paper_accounting'], entry['ours']
    mark = lambda key: '*' if acc['derived'] == key else ''
    sigma = (_number(paper['noise_multiplier'], 3)
             if paper['noise_multiplier'] is not None
             else _number(acc['sigma'], 3) + mark('sigma'))
    steps = (str(paper['steps']) if paper['steps'] is not None
             else ('–' if acc['steps'] is None
                   else f'{acc["steps"]}{mark("steps")}'))
    lines.append(
        f'| {entry["row"]} | {sigma} | {steps} | {paper["epsilon"]:g} | '
        f'{_number(acc["epsilon"], 3)} | {_number(ours["sigma"], 3)} | '
        f'{ours["steps"]} | {_number(ours["epsilon"], 3)} | '
        f'{paper["delta"]:g} | {paper["notes"] or "–"} |')
  lines.append('\n\\* derived: not stated by the paper; the most steps its σ '
               'affords within its ε (or the σ that meets its ε), under its '
               'own accountant.')
  return '\n'.join(lines)


def write_json(path: str, payload) -> None:
  """Writes `payload` as indented JSON (directories created)."""
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  with open(path, 'w') as f:
    json.dump(payload, f, indent=2, allow_nan=False, default=float)


def today() -> str:
  return time.strftime('%Y-%m-%d')

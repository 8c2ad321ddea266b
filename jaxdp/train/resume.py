"""Opening a workdir's run, and checking a checkpoint once it is restored.

A workdir holds at most one run: its checkpoints and its privacy ledger.
`open_run` reads both (host 0's view decides on a shared filesystem) and
refuses a ledger that was altered or that records steps no checkpoint holds;
`check_restored` refuses a restored checkpoint that disagrees with this run's
noise counter, step events or ledger.
"""

from typing import NamedTuple, Optional

from jaxdp import distributed
from jaxdp import noise
from jaxdp import streams
from jaxdp.errors import ConfigError
from jaxdp.train import checkpointing
from jaxdp.train import ledger as ledger_lib
from jaxdp.train import run_identity
from jaxdp.train.bookkeeping import Progress


class Run(NamedTuple):
  """A workdir's run as `open_run` found it."""

  checkpointer: checkpointing.Checkpointer
  latest: Optional[int]  # Executions of the newest checkpoint (None: none).
  meta: Optional[dict]  # The newest checkpoint's meta (None: a fresh run).
  ledger: ledger_lib.Ledger
  progress: Progress  # From `meta`, or a fresh run's.


def open_run(config, workdir: str) -> Run:
  """The checkpointer, newest checkpoint, ledger and progress of `workdir`.

  Raises ConfigError for a damaged ledger, a ledger that records executed
  steps without a checkpoint, or a privacy setting of `config` that differs
  from the checkpoint's.
  """
  checkpointer = checkpointing.Checkpointer(workdir, config.checkpoint.keep)
  # Host 0's listing decides (another host's view of a shared filesystem may
  # lag); from here on the newest checkpoint is tracked, not listed again.
  listed = checkpointer.latest()
  listed = distributed.host0_int(0 if listed is None else listed + 1)
  latest = None if listed == 0 else listed - 1
  meta = None if latest is None else checkpointer.read_meta(latest)
  try:
    ledger = ledger_lib.Ledger(workdir, write=distributed.is_primary())
  except ledger_lib.LedgerError as e:
    raise ConfigError('ledger', f'{ledger_lib.FILENAME} in the workdir is '
                      f'damaged ({e})', 'restore the original file; jaxdp '
                      'never resumes a run whose record of spending was '
                      'altered') from e
  if meta is None and ledger.executions() > 0:
    raise ConfigError('checkpoint', 'the ledger records executed steps but the '
                      'workdir has no checkpoint', 'restore the checkpoints '
                      'directory, or start over in a new --workdir')

  # Every host has read the same ledger and checkpoint before host 0 writes.
  distributed.check_same('ledger', f'{ledger_lib.FILENAME} (its head hash)',
                         int(ledger.head[:32], 16), 'put the workdir on a '
                         'filesystem every host sees the same way')
  distributed.barrier('jaxdp: workdir read')
  if meta is None:
    seed = (distributed.host0_int(streams.secure_seed())
            if config.dp.secure_noise else config.seed)
    progress = Progress(privacy_seed=seed)
  else:
    progress = Progress.from_json(meta)
    # Before building the mechanism, whose own checks would name another field.
    run_identity.check_resume(meta['privacy'],
                              run_identity.settings_in_config(config))
  return Run(checkpointer, latest, meta, ledger, progress)


def check_restored(run: Run, state, mechanism) -> None:
  """ConfigError unless the restored `state` and `run.meta` are this run's.

  Its noise counter must equal its executions, its DpEvent history must be
  `mechanism`'s step events, and the ledger must hold the entry it recorded.
  """
  where = f'{run.checkpointer.directory}/{run.latest}'
  if noise.noise_steps(state.opt_state) != [run.progress.executed]:
    raise ConfigError('checkpoint', f'{where}: its noise counter disagrees '
                      'with its executions',
                      'start over in a new --workdir')
  recorded = run.meta['history']
  if recorded != mechanism.history(
      sum(segment['count'] for segment in recorded)):
    raise ConfigError('checkpoint', f'{where}: its DpEvent history is not '
                      'this run\'s step events',
                      'start over in a new --workdir')
  anchor = run.meta['ledger']
  if (anchor['entries'] > len(run.ledger.entries) or
      run.ledger.entries[anchor['entries'] - 1]['hash'] != anchor['head']):
    raise ConfigError('ledger', f'{ledger_lib.FILENAME} does not contain the '
                      'entries the newest checkpoint recorded (lines were '
                      'cut or replaced)', 'restore the original file')

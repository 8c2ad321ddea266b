"""`train_and_evaluate(config, workdir)`: one DP training run, end to end.

The loop: sample a batch on the host (the mechanism's sampler), run the jitted
step (clip per example, sum, noise once, normalise by the expected batch size,
optimizer), and at every evaluation: check for divergence, account, checkpoint,
then log. Results go to stdout and `<workdir>/results.json`.

What makes a run survive (see docs/survival.md):

* **Resume.** Rerunning the same command on the same workdir continues from
  the newest checkpoint. Batches and noise are drawn from (seed, execution
  index), so the resumed run is bit-identical to one never interrupted. Steps
  run after the newest checkpoint and lost in a crash had released nothing
  (results are logged only once their checkpoint is on disk), so re-running
  them with the same draws is safe, and they are counted once.
* **Budget.** Before every step `budget.Budget` checks that ε of all
  executions plus this one stays within `dp.target_epsilon`.
* **Divergence.** Non-finite parameters, or a held-out loss spike, roll the
  run back to the newest checkpoint with a lower learning rate. The undone
  steps stay accounted, and the steps after the rollback draw fresh batches
  and noise (draws are indexed by executions, which never go back).
* **Ledger.** Every start, accounted segment, checkpoint, rollback and stop is
  appended to the hash-chained `privacy_ledger.jsonl`.

The pieces: `resume` opens the workdir's run and checks a restored
checkpoint, `bookkeeping.RunBook` keeps the ledger, checkpoints and progress
in step (accounting, rollbacks, stops), and `report` writes the log lines and
`results.json`.
"""

import contextlib
import fcntl
import functools
import itertools
import math
import os
import signal
import threading
import time
from typing import Callable

import jax
import jax.numpy as jnp
import optax

from jaxdp import distributed
from jaxdp import optimizers
from jaxdp import sharding
from jaxdp import streams
from jaxdp.accounting import budget as budget_lib
from jaxdp.errors import ConfigError
from jaxdp.mechanism import build_mechanism
from jaxdp.models import lora
from jaxdp.tasks import Task
from jaxdp.tasks import build_task
from jaxdp.train import bookkeeping
from jaxdp.train import divergence
from jaxdp.train import report
from jaxdp.train import resume
from jaxdp.train import run_identity
from jaxdp.train import step as steps
# Re-exported: importable from here as before the split.
from jaxdp.train.bookkeeping import Progress  # pylint: disable=unused-import
from jaxdp.train.report import final_line  # pylint: disable=unused-import
from jaxdp.train.state import TrainState


# Exit statuses of a run (results['status']).
COMPLETED = 'completed'
BUDGET_EXHAUSTED = 'budget_exhausted'
INTERRUPTED = 'interrupted'
DIVERGED = 'diverged'
# The process exit status of each (experiments/train.py documents them).
EXIT_STATUS = {COMPLETED: 0, BUDGET_EXHAUSTED: 0, INTERRUPTED: 75,
               DIVERGED: 1}


def _batch_arrays(task: Task, batch, placement: sharding.Placement,
                  execution: int) -> dict:
  """A sampled batch on the mesh; padding slots hold zeros and mask False.

  Every host holds the same index list (same seed, same step) and gathers
  only the slots of its own devices.
  """
  def gather(positions):
    mask = batch.mask[positions]
    return {'inputs': task.train_inputs(batch.indices[positions], mask,
                                        positions, execution),
            'mask': mask}
  return placement.put_batch(gather, len(batch.indices))


def _check_run_fields(config) -> None:
  """ConfigError for bad settings outside config.dp (checked before work)."""
  top = streams.MAX_CONFIG_SEED
  if not (isinstance(config.seed, int) and 0 <= config.seed <= top):
    raise ConfigError('seed', f'must be an integer in [0, {top}], '
                      f'got {config.seed!r}', 'set seed=0 (or another small '
                      'integer)')
  if not config.eval.batch_size > 0:
    raise ConfigError('eval.batch_size',
                      f'must be > 0, got {config.eval.batch_size}',
                      'set a positive evaluation batch size')
  for field, value in (('eval.every_steps', config.eval.every_steps),
                       ('checkpoint.every_steps', config.checkpoint.every_steps),
                       ('recovery.max_rollbacks', config.recovery.max_rollbacks)):
    if not (isinstance(value, int) and value >= 0):
      raise ConfigError(field, f'must be an integer >= 0, got {value!r}',
                        'set 0 to turn it off, or a positive number')
  if not (isinstance(config.checkpoint.keep, int) and config.checkpoint.keep >= 1):
    raise ConfigError('checkpoint.keep',
                      f'must be an integer >= 1, got {config.checkpoint.keep!r}',
                      'keep at least one checkpoint, e.g. checkpoint.keep=3')
  if not 0 < config.recovery.lr_factor < 1:
    raise ConfigError('recovery.lr_factor',
                      f'must be in (0, 1), got {config.recovery.lr_factor}',
                      'lower the learning rate at a rollback, e.g. 0.5')
  if not config.recovery.loss_spike_factor >= 0:
    raise ConfigError('recovery.loss_spike_factor',
                      f'must be >= 0, got {config.recovery.loss_spike_factor}',
                      'use 0 to turn the loss test off, or e.g. 10')
  if not 0 <= config.optimizer.ema_decay < 1:
    raise ConfigError('optimizer.ema_decay',
                      f'must be in [0, 1), got {config.optimizer.ema_decay}',
                      'use 0 (no averaging) or e.g. 0.9999')
  if not (isinstance(config.data.augmult, int) and config.data.augmult >= 0):
    raise ConfigError('data.augmult', f'must be an integer >= 0, got '
                      f'{config.data.augmult!r}', 'use 0 (no augmentation) or '
                      'the number of views, e.g. 16')
  if config.data.augmult and config.data.features != 'pixels':
    raise ConfigError('data.augmult', 'flips and crops apply to images, not '
                      f'to {config.data.features} features',
                      'use data.augmult=0 with data.features='
                      f'{config.data.features}')


class _StopSignals:
  """Turns SIGTERM/SIGINT into a flag the loop polls between steps.

  On several hosts JAX's preemption service already catches SIGTERM and
  agrees with the other hosts on a step to stop at; SIGTERM is left to it.
  """

  def __init__(self, sigterm: bool = True):
    self.received = None
    self._signals = (signal.SIGTERM, signal.SIGINT) if sigterm else (
        signal.SIGINT,)
    self._previous = {}

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for sig in self._signals:
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def _handle(self, signum, frame):
    del frame
    self.received = signal.Signals(signum).name

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


def train_and_evaluate(config, workdir: str,
                       log: Callable[[str], None] = print) -> dict:
  """Trains `config` with DP (resuming from `workdir`) and returns results.

  Args:
    config: a locked ConfigDict shaped like `configs/base.py`.
    workdir: directory for checkpoints, the privacy ledger, `results.json`
      and `config.json` (created). If it holds a checkpoint, the run resumes.
    log: receives one progress line per evaluation and every event.

  Returns:
    A JSON-ready dict with at least status, accuracy, epsilon (spent), delta,
    noise_multiplier, steps, executed_steps and wall_seconds.
  """
  start = time.time()
  if not distributed.is_primary():
    log = lambda line: None  # Host 0 speaks for the run.
  _check_run_fields(config)
  task = build_task(config)
  if jax.process_count() > 1:  # The same index must mean the same example.
    distributed.check_same(
        'data.data_dir', 'the data (SHA-256 of the training and held-out '
        'splits)', task.digest(), 'give every host the same data '
        'files (the same data.data_dir contents)')
  os.makedirs(workdir, exist_ok=True)
  with _workdir_lock(workdir):
    return _train(config, workdir, log, start, task)


@contextlib.contextmanager
def _workdir_lock(workdir: str):
  """One run per workdir: two would fork the ledger and share draws.

  An advisory lock on `<workdir>/.lock`, taken by host 0; the OS releases it
  when the process dies, so a killed run never blocks its own resume. Every
  host learns whether it was taken, so all of them stop if it was not.
  """
  primary = distributed.is_primary()
  with (open(os.path.join(workdir, '.lock'), 'w') if primary
        else contextlib.nullcontext()) as lock:
    busy = False
    if primary:
      try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except BlockingIOError:
        busy = True
    if distributed.any_host(busy):
      raise ConfigError('workdir', f'{workdir} is in use by another run',
                        'wait for that run to end, or use another --workdir')
    try:
      yield
    finally:
      if primary:
        fcntl.flock(lock, fcntl.LOCK_UN)


def _train(config, workdir: str, log, start: float, task: Task) -> dict:
  """train_and_evaluate, once the workdir is ours."""
  run = resume.open_run(config, workdir)
  meta, progress = run.meta, run.progress
  placement = sharding.Placement(sharding.make_mesh(config.perf.num_devices),
                                 config.perf.param_sharding)
  mechanism = build_mechanism(
      config.dp, config.perf, task.num_train, config.train.num_steps,
      config.train.num_epochs, progress.privacy_seed,
      resumed_noise_multiplier=None if meta is None
      else meta['privacy']['noise_multiplier'],
      num_devices=placement.num_devices)
  settings = run_identity.privacy_settings(mechanism, task, config)
  if meta is not None:
    run_identity.check_resume(meta['privacy'], settings)
  if mechanism.setup_event is not None:
    # Same seed, same data: a resumed run recomputes the same release.
    task = task.with_releases(config.dp, progress.privacy_seed)
  state, tx, frozen = _init_state(config, task, mechanism, placement,
                                  progress.privacy_seed)
  num_params, num_frozen = _size(state.params), _size(frozen)
  if meta is not None:
    state, _ = run.checkpointer.restore(run.latest, state)
    state = placement.put_state(state)
    resume.check_restored(run, state, mechanism)
  train_step = steps.make_train_step(task.batch_loss, mechanism, tx,
                                     placement, state,
                                     config.optimizer.ema_decay)
  evaluate = functools.partial(_evaluate, task, frozen, placement)
  book = bookkeeping.RunBook(config, mechanism, settings, placement,
                             run.checkpointer, run.ledger, progress,
                             run.latest, log)
  summary = mechanism.summary()
  report.banner(log, task, config, mechanism, summary, placement,
                num_params, num_frozen)
  book.begin(state, meta, evaluate)

  budget = _budget(book)
  state, status, test_loss, accuracy, received = _loop(
      book, budget, task, train_step, frozen, evaluate, state, log, start)
  if status == INTERRUPTED:
    state, stopped = book.interrupted(state, received)
    status = DIVERGED if stopped else INTERRUPTED
  if status == BUDGET_EXHAUSTED:
    book.budget_stop(state, budget)
  if status != COMPLETED or math.isnan(accuracy):
    test_loss, accuracy = evaluate(_model_params(state))

  done = int(state.step)
  results = report.results(summary, book, budget, task, placement, status,
                           done, test_loss, accuracy, num_params, num_frozen,
                           start)
  book.final(status, done, results['accuracy'])
  results['ledger_head'] = run.ledger.head
  if distributed.is_primary():
    report.write(workdir, config, results)
  return results


def _loop(book: bookkeeping.RunBook, budget: budget_lib.Budget, task: Task,
          train_step, frozen, evaluate, state, log, start: float) -> tuple:
  """Steps until the plan is done or the run must stop.

  Returns:
    (state, status, test_loss, accuracy, the stop signal's name or None):
    the held-out metrics of the last evaluation (nan if none ran).
  """
  config, mechanism, progress = book.config, book.mechanism, book.progress
  planned = mechanism.num_steps
  every = config.eval.every_steps or planned
  ckpt_every = config.checkpoint.every_steps
  status = COMPLETED
  test_loss = accuracy = float('nan')
  done = int(state.step)  # Host copy: reading state.step would sync a step.
  polls = itertools.count(progress.executed)  # +1 per pass, on every host.
  with _StopSignals(sigterm=not distributed.preemption_service()) as signals:
    while done < planned:
      if distributed.stop_requested(signals.received is not None,
                                    next(polls)):
        status = INTERRUPTED
        break
      replaying = progress.executed < book.ledger.executions()
      if not replaying and not budget.allows(progress.executed):
        status = BUDGET_EXHAUSTED
        break
      batch = _batch_arrays(task, mechanism.sampler.sample(progress.executed),
                            book.placement, progress.executed)
      state, metrics = train_step(state, batch, frozen)
      progress.executed += 1
      done += 1
      evaluate_now = done % every == 0 or done == planned
      if not (evaluate_now or (ckpt_every and done % ckpt_every == 0)):
        continue
      eval_loss = None
      if evaluate_now:
        test_loss, accuracy = evaluate(_model_params(state))
        # Divergence is judged on the parameters being trained: an average
        # lags them by many steps.
        eval_loss = (test_loss if state.ema_params is None
                     else evaluate(state.params)[0])
      why = distributed.agreed_reason(divergence.reason(
          divergence.params_finite(state.params), eval_loss,
          progress.best_eval_loss, config.recovery.loss_spike_factor))
      if why is not None:
        state, stopped = book.rollback(state, why, done)
        done = int(state.step)
        if stopped:
          status = DIVERGED
          break
        continue
      if eval_loss is not None:
        progress.best_eval_loss = min(eval_loss, progress.best_eval_loss
                                      if progress.best_eval_loss is not None
                                      else math.inf)
        progress.evals.append(report.eval_row(
            done, progress.executed, test_loss, accuracy, book.spent(),
            metrics, start))
      # Results are logged only once their state is saved.
      book.checkpoint(state)
      if eval_loss is not None:
        log(report.eval_line(progress.evals[-1], planned, test_loss, accuracy,
                             book.spent(), start))
  return state, status, test_loss, accuracy, signals.received


def _budget(book: bookkeeping.RunBook) -> budget_lib.Budget:
  """The ε budget checked before each step (at most the plan executed
  `max_rollbacks + 2` times)."""
  mechanism, planned = book.mechanism, book.mechanism.num_steps
  return budget_lib.Budget(
      mechanism.epsilon,
      mechanism.target_epsilon if mechanism.is_private else None,
      planned=max(planned, book.accounted()),
      cap=book.accounted() + planned * (book.config.recovery.max_rollbacks + 2))


def _init_state(config, task: Task, mechanism, placement: sharding.Placement,
                privacy_seed: int) -> tuple:
  """(the initial TrainState on the mesh, the optimizer, frozen parameters)."""
  params, frozen = task.init(streams.init_key(config.seed))
  if frozen is not None:
    frozen = placement.put_state(frozen)
  tx = optax.chain(
      mechanism.noise_transform(privacy_seed),  # Privatise first ...
      optimizers.build_optimizer(config.optimizer, mechanism.num_steps))  # ... then post-process.
  state = placement.put_state(TrainState(
      step=jnp.zeros([], jnp.int32), params=params, opt_state=tx.init(params),
      ema_params=(jax.tree_util.tree_map(jnp.copy, params)
                  if config.optimizer.ema_decay > 0 else None)))
  return state, tx, frozen


def _size(tree) -> int:
  """The number of values in a pytree's arrays."""
  return sum(x.size for x in jax.tree_util.tree_leaves(tree))


def _model_params(state: TrainState):
  """The averaged parameters are the model, when there are any."""
  return state.params if state.ema_params is None else state.ema_params


def _evaluate(task: Task, frozen, placement: sharding.Placement,
              params) -> tuple:
  """(loss, accuracy) on the held-out split."""
  return task.evaluate(lora.merge(frozen, params), placement)

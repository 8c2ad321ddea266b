"""`train_and_evaluate(config, workdir)`: one DP training run, end to end.

The loop: sample a batch on the host (the mechanism's sampler), run the jitted
step (clip per example, sum, noise once, normalise by the expected batch size,
optimizer), and at every evaluation: check for divergence, account, checkpoint,
then log. Results go to stdout and `<workdir>/results.json`.

What makes a run survive (see the README's "Runs that survive"):

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
"""

import contextlib
import dataclasses
import fcntl
import itertools
import json
import math
import os
import signal
import threading
import time
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import optax

from jaxdp import streams
from jaxdp.accounting import budget as budget_lib
from jaxdp.train import checkpointing
from jaxdp import distributed
from jaxdp.train import divergence
from jaxdp.accounting import history as event_history
from jaxdp.train import ledger as ledger_lib
from jaxdp import noise
from jaxdp import optimizers
from jaxdp.train import run_identity
from jaxdp import sharding
from jaxdp.train import step as steps
from jaxdp.errors import ConfigError
from jaxdp.mechanism import build_mechanism
from jaxdp.models import lora
from jaxdp.tasks import Task
from jaxdp.tasks import build_task
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


def _json_number(x: float) -> Optional[float]:
  return float(x) if math.isfinite(x) else None


def _check_run_fields(config) -> None:
  """ConfigError for bad settings outside config.dp (checked before work)."""
  if not (isinstance(config.seed, int) and 0 <= config.seed <= streams.MAX_CONFIG_SEED):
    raise ConfigError('seed', f'must be an integer in [0, {streams.MAX_CONFIG_SEED}], '
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


@dataclasses.dataclass
class Progress:
  """The host-side state of a run, saved in every checkpoint's meta."""

  privacy_seed: int  # Seeds the sampler and noise (secret if secure_noise).
  executed: int = 0  # Steps run so far, counting those undone by rollbacks.
  rollbacks: int = 0
  best_eval_loss: Optional[float] = None
  evals: list = dataclasses.field(default_factory=list)
  rollback_log: list = dataclasses.field(default_factory=list)

  def to_json(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_json(cls, meta: dict) -> 'Progress':
    return cls(**{f.name: meta[f.name] for f in dataclasses.fields(cls)})


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
  checkpointer = checkpointing.Checkpointer(workdir, config.checkpoint.keep)
  # Host 0's listing decides (another host's view of a shared filesystem may
  # lag); from here on the newest checkpoint is tracked, not listed again.
  listed = checkpointer.latest()
  listed = distributed.host0_int(0 if listed is None else listed + 1)
  latest = None if listed == 0 else listed - 1
  newest = [latest]  # Executions of the newest checkpoint (None: none yet).
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
    progress = Progress(privacy_seed=distributed.host0_int(streams.secure_seed())
                        if config.dp.secure_noise else config.seed)
  else:
    progress = Progress.from_json(meta)
    # Before building the mechanism, whose own checks would name another field.
    run_identity.check_resume(meta['privacy'],
                              run_identity.settings_in_config(config))
  placement = sharding.Placement(sharding.make_mesh(config.perf.num_devices),
                                 config.perf.param_sharding)
  mechanism = build_mechanism(
      config.dp, config.perf, task.num_train, config.train.num_steps,
      config.train.num_epochs, progress.privacy_seed,
      resumed_noise_multiplier=None if meta is None
      else meta['privacy']['noise_multiplier'],
      num_devices=placement.num_devices)
  settings = run_identity.privacy_settings(mechanism, task, config)
  event_json = event_history.event_to_json(mechanism.step_event())
  piece_events = [[count, event_history.event_to_json(event)]
                  for count, event in mechanism.pieces()]
  if meta is not None:
    run_identity.check_resume(meta['privacy'], settings)
  if mechanism.setup_event is not None:
    # Same seed, same data: a resumed run recomputes the same release.
    task = task.with_releases(config.dp, progress.privacy_seed)
  params, frozen = task.init(streams.init_key(config.seed))
  if frozen is not None:
    frozen = placement.put_state(frozen)
  num_params = sum(x.size for x in jax.tree_util.tree_leaves(params))
  num_frozen = sum(x.size for x in jax.tree_util.tree_leaves(frozen))
  tx = optax.chain(
      mechanism.noise_transform(progress.privacy_seed),  # Privatise first ...
      optimizers.build_optimizer(config.optimizer, mechanism.num_steps))  # ... then post-process.
  state = placement.put_state(TrainState(
      step=jnp.zeros([], jnp.int32), params=params, opt_state=tx.init(params),
      ema_params=(jax.tree_util.tree_map(jnp.copy, params)
                  if config.optimizer.ema_decay > 0 else None)))
  if meta is not None:
    state, _ = checkpointer.restore(latest, state)
    state = placement.put_state(state)
    if noise.noise_steps(state.opt_state) != [progress.executed]:
      raise ConfigError('checkpoint', f'{checkpointer.directory}/{latest}: '
                        'its noise counter disagrees with its executions',
                        'start over in a new --workdir')
    recorded = meta['history']
    if recorded != mechanism.history(
        sum(segment['count'] for segment in recorded)):
      raise ConfigError('checkpoint', f'{checkpointer.directory}/{latest}: '
                        'its DpEvent history is not this run\'s step events',
                        'start over in a new --workdir')
    anchor = meta['ledger']
    if (anchor['entries'] > len(ledger.entries) or
        ledger.entries[anchor['entries'] - 1]['hash'] != anchor['head']):
      raise ConfigError('ledger', f'{ledger_lib.FILENAME} does not contain the '
                        'entries the newest checkpoint recorded (lines were '
                        'cut or replaced)', 'restore the original file')
  train_step = steps.make_train_step(task.batch_loss, mechanism, tx,
                                     placement, state,
                                     config.optimizer.ema_decay)
  # The averaged parameters are the model, when there are any.
  model_params = lambda s: s.params if s.ema_params is None else s.ema_params

  def evaluate(params) -> tuple:  # (loss, accuracy) on the held-out split.
    return task.evaluate(lora.merge(frozen, params), placement)

  def accounted() -> int:
    # Draws re-run after a crash are the same draws: counted once.
    return max(progress.executed, ledger.executions())

  def spent() -> float:  # The mechanism remembers ε for each count.
    return mechanism.epsilon(accounted())

  def account() -> None:
    """Appends ledger segments for the executions not yet in it (one per
    piece of a noise schedule they cross)."""
    first = ledger.executions()
    done = 0
    for segment in mechanism.history(progress.executed):
      start, done = done, done + segment['count']
      if done > first:
        ledger.append('segment', {
            'event': segment['event'], 'first': max(first, start),
            'count': done - max(first, start),
            'epsilon': _json_number(mechanism.epsilon(done))})

  def checkpoint(state) -> None:
    account()
    if newest[0] == progress.executed:
      return  # Nothing ran since the newest checkpoint.
    checkpointer.save(progress.executed, state, dict(
        progress.to_json(), privacy=settings, logical_step=int(state.step),
        # The accountant's history: every execution so far, one DpEvent each.
        history=mechanism.history(accounted()),
        config=json.loads(config.to_json()),
        ledger={'entries': len(ledger.entries), 'head': ledger.head}))
    newest[0] = progress.executed
    ledger.append('checkpoint', {'executed': progress.executed,
                                 'step': int(state.step)})

  def on_divergence(state, why: str, step: int) -> tuple:
    """Rolls back to the newest checkpoint; (state, whether the run stops)."""
    # Draws from here on are fresh, even if this happened while re-running
    # steps lost in a crash: those draws were spent by the lost run.
    progress.executed = accounted()
    account()
    latest = newest[0]
    restored, meta = checkpointer.restore(latest, state)
    restored = placement.put_state(restored.replace(
        opt_state=noise.with_noise_step(restored.opt_state,
                                        progress.executed)))
    event = {'reason': why, 'step': step, 'executed': progress.executed,
             'to_step': int(restored.step), 'to_checkpoint': latest,
             'epsilon': _json_number(spent())}
    if progress.rollbacks >= config.recovery.max_rollbacks:
      ledger.append('divergence_stop', event)
      log(f'step {step}: diverged ({why}) after {progress.rollbacks} '
          f'rollbacks: stopping at the newest checkpoint (step '
          f'{int(restored.step)})')
      checkpoint(restored)  # Anchors the spending in a checkpoint.
      return restored, True
    lr_scale = float(restored.lr_scale) * config.recovery.lr_factor
    restored = placement.put_state(
        restored.replace(lr_scale=jnp.asarray(lr_scale, jnp.float32)))
    progress.rollbacks += 1
    progress.best_eval_loss = meta['best_eval_loss']
    event['lr_scale'] = lr_scale
    progress.rollback_log.append(event)
    ledger.append('rollback', event)
    log(f'step {step}: diverged ({why}); rolled back to step '
        f'{int(restored.step)} (checkpoint {latest}), learning rate × '
        f'{lr_scale:g}; the {progress.executed - latest} steps since stay '
        'accounted')
    checkpoint(restored)
    return restored, False

  s = mechanism.summary()
  log(f'data {task.name}: {task.num_train} train / {task.num_test} test from '
      f'{task.source}')
  log(f'model {task.results.get("model", config.model.name)}: {num_params} '
      f'trained parameters'
      + (f' ({num_frozen} frozen: {task.frozen_note})' if num_frozen else '')
      + f' on {placement.num_devices} {jax.devices()[0].platform} device(s) '
      f'({jax.process_count()} host(s)), parameters {placement.param_sharding}')
  log(f'privacy: sampler {s["sampler"]} q={s["sampling_probability"]:.5g} '
      f'(expected batch {s["expected_batch_size"]:g}, padded to '
      f'{mechanism.sampler.padded_size}), C={config.dp.clip_norm:g}, '
      f'σ={s["noise_multiplier"]:.4g}, {s["steps"]} steps, '
      f'ε={s["epsilon"] if s["epsilon"] is None else round(s["epsilon"], 4)} '
      f'at δ={s["delta"]:g} ({s["accountant"]}, {s["neighboring_relation"]})'
      + (', seeds from OS entropy' if config.dp.secure_noise else ''))
  common = {'config_hash': run_identity.config_hash(config),
            'code_version': run_identity.code_version()}
  if meta is None:
    ledger.append('run_start', dict(common, privacy=settings,
                                    step_event=event_json,
                                    step_pieces=piece_events,
                                    setup_event=settings['setup_event'],
                                    planned_steps=mechanism.num_steps))
    # The loss at initialisation is the first baseline for spike detection
    # (held-out data: no privacy cost).
    progress.best_eval_loss, _ = evaluate(state.params)
    checkpoint(state)
  else:
    ledger.append('resume', dict(common, executed=progress.executed,
                                 step=int(state.step),
                                 planned_steps=mechanism.num_steps))
    log(f'resumed from {checkpointer.directory}/{latest}: step '
        f'{int(state.step)}, {progress.executed} steps executed, ε '
        f'{spent():.4f} spent')
    changed = _changed_fields(meta['config'], json.loads(config.to_json()))
    if changed:  # Allowed (the privacy settings were checked above), but said.
      log('settings changed since the checkpoint (none that decides the '
          'guarantee): ' + ', '.join(changed))

  planned = mechanism.num_steps
  budget = budget_lib.Budget(
      mechanism.epsilon,
      mechanism.target_epsilon if mechanism.is_private else None,
      planned=max(planned, accounted()),
      cap=accounted() + planned * (config.recovery.max_rollbacks + 2))
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
      replaying = progress.executed < ledger.executions()
      if not replaying and not budget.allows(progress.executed):
        status = BUDGET_EXHAUSTED
        break
      batch = _batch_arrays(task, mechanism.sampler.sample(progress.executed),
                            placement, progress.executed)
      state, metrics = train_step(state, batch, frozen)
      progress.executed += 1
      done += 1
      evaluate_now = done % every == 0 or done == planned
      if not (evaluate_now or (ckpt_every and done % ckpt_every == 0)):
        continue
      eval_loss = None
      if evaluate_now:
        test_loss, accuracy = evaluate(model_params(state))
        # Divergence is judged on the parameters being trained: an average
        # lags them by many steps.
        eval_loss = (test_loss if state.ema_params is None
                     else evaluate(state.params)[0])
      why = distributed.agreed_reason(divergence.reason(
          divergence.params_finite(state.params), eval_loss,
          progress.best_eval_loss, config.recovery.loss_spike_factor))
      if why is not None:
        state, stopped = on_divergence(state, why, done)
        done = int(state.step)
        if stopped:
          status = DIVERGED
          break
        continue
      if eval_loss is not None:
        progress.best_eval_loss = min(eval_loss, progress.best_eval_loss
                                      if progress.best_eval_loss is not None
                                      else math.inf)
        diagnostics = {k: float(v) for k, v in metrics.items()}
        progress.evals.append({
            'step': done, 'executed': progress.executed,
            'test_loss': _json_number(test_loss),
            'accuracy': _json_number(accuracy),
            'epsilon': _json_number(spent()),
            # The last step's C: public (adaptive clipping derives it from
            # noisy counts only).
            'clip_norm': _json_number(diagnostics.pop('clip_norm')),
            'wall_seconds': time.time() - start,
            # Statistics of the private batch, outside the DP guarantee.
            'non_private_diagnostics': {k: _json_number(v)
                                        for k, v in diagnostics.items()},
        })
      checkpoint(state)  # Results are logged only once their state is saved.
      if eval_loss is not None:
        row = progress.evals[-1]
        log(f'step {done}/{planned} | test_loss {test_loss:.4f} | accuracy '
            f'{accuracy:.4f} | ε {spent():.4f} | batch_loss '
            f'{row["non_private_diagnostics"]["batch_loss"]:.4f} (not '
            f'private) | clipped '
            f'{row["non_private_diagnostics"]["clipped_fraction"]:.2f} | '
            f'{time.time() - start:.1f}s')

  # One name on every host (each host keeps the same ledger chain).
  stop_signal = (signals.received if jax.process_count() == 1
                 else 'SIGTERM (JAX preemption notice) or SIGINT on one of '
                 'the hosts')
  if status == INTERRUPTED:
    if divergence.params_finite(state.params):
      checkpoint(state)
    else:  # Never save a broken state: recover first, as at an evaluation.
      state, stopped = on_divergence(state, 'the parameters are not all '
                                     'finite', int(state.step))
      status = DIVERGED if stopped else INTERRUPTED
    ledger.append('interrupted', {'signal': stop_signal,
                                  'step': int(state.step),
                                  'executed': progress.executed,
                                  'epsilon': _json_number(spent())})
    log(f'{stop_signal} at step {int(state.step)}: checkpoint saved; '
        'rerun the same command to resume')
  done = int(state.step)
  if status == BUDGET_EXHAUSTED:
    checkpoint(state)
    remaining = budget.remaining(accounted())
    ledger.append('budget_stop', {'step': done, 'executed': progress.executed,
                                  'epsilon': _json_number(spent()),
                                  'remaining': remaining})
    why = ('one more step would exceed it'
           if mechanism.epsilon(accounted() + 1) > mechanism.target_epsilon
           else 'the budget search stopped at its cap of '
           f'{budget.last_affordable} executions')
    log(f'budget: stopped at step {done}/{planned} after '
        f'{progress.executed} executed steps; ε {spent():.4f} of the target '
        f'{mechanism.target_epsilon:g} is spent, {remaining:.4g} remains, and '
        f'{why}')
  if status != COMPLETED or math.isnan(accuracy):
    test_loss, accuracy = evaluate(model_params(state))

  eps = spent()
  results = dict(s)  # The planned run; `epsilon` is replaced by ε spent.
  results.update({
      'status': status,
      'epsilon': _json_number(eps),
      'planned_epsilon': s['epsilon'],
      'steps': done,
      'planned_steps': planned,
      'executed_steps': accounted(),
      'rollbacks': progress.rollbacks,
      'epsilon_remaining': budget.remaining(accounted()),
      'accuracy': _json_number(accuracy),
      'test_loss': _json_number(test_loss),
      'dataset': task.name,
      'dataset_source': task.source,
      'num_train_examples': task.num_train,
      'model': config.model.name,
      'num_params': int(num_params),
      'num_frozen_params': int(num_frozen),
      'seed': config.seed,
      'secure_noise': bool(config.dp.secure_noise),
      'platform': jax.devices()[0].platform,
      'num_devices': placement.num_devices,
      'num_hosts': jax.process_count(),
      'wall_seconds': time.time() - start,
      'history': progress.evals,
      'rollback_log': progress.rollback_log,
  })
  results.update(task.results)
  ledger.append('final', {'status': status, 'step': done,
                          'executed': accounted(),
                          'epsilon': _json_number(eps),
                          'delta': mechanism.delta,
                          'accuracy': results['accuracy']})
  results['ledger_head'] = ledger.head
  if not distributed.is_primary():
    return results
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    f.write(config.to_json(indent=2))
  with open(os.path.join(workdir, 'results.json'), 'w') as f:
    json.dump(results, f, indent=2, allow_nan=False)
  return results


def _changed_fields(saved: dict, current: dict, prefix: str = '') -> list:
  """'field: old → new' for every leaf of the config that differs."""
  out = []
  for key in sorted(set(saved) | set(current)):
    old, new = saved.get(key), current.get(key)
    if isinstance(old, dict) and isinstance(new, dict):
      out += _changed_fields(old, new, f'{prefix}{key}.')
    elif old != new:
      out.append(f'{prefix}{key}: {old!r} → {new!r}')
  return out


def final_line(results: dict) -> str:
  """The one-line JSON summary printed last (history left out)."""
  return json.dumps({k: v for k, v in results.items()
                     if k not in ('history', 'rollback_log')},
                    allow_nan=False)

"""What a run has spent and saved: its `Progress` and its `RunBook`.

The RunBook keeps the privacy ledger, the checkpoints and the host-side
progress in step. Every checkpoint first accounts the executions it covers;
a rollback restores the newest checkpoint but never takes an execution back
(the undone steps stay accounted and later draws are fresh); every start,
rollback and stop is written to the ledger and said in the log.
"""

import dataclasses
import json
from typing import Callable, Optional

import jax
import jax.numpy as jnp

from jaxdp import noise
from jaxdp.accounting import history as event_history
from jaxdp.train import divergence
from jaxdp.train import run_identity
from jaxdp.train.report import changed_fields
from jaxdp.train.report import json_number


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


class RunBook:
  """The ledger, checkpoints and progress of one run, kept in step.

  Attributes:
    config, mechanism, settings (the run's privacy settings), placement,
    checkpointer, ledger, progress: what the book keeps.
    newest: executions of the newest checkpoint (None: none yet).
  """

  def __init__(self, config, mechanism, settings: dict, placement,
               checkpointer, ledger, progress: Progress,
               latest: Optional[int], log: Callable[[str], None]):
    self.config = config
    self.mechanism = mechanism
    self.settings = settings
    self.placement = placement
    self.checkpointer = checkpointer
    self.ledger = ledger
    self.progress = progress
    self.newest = latest
    self.log = log

  def accounted(self) -> int:
    """Executions spent so far."""
    # Draws re-run after a crash are the same draws: counted once.
    return max(self.progress.executed, self.ledger.executions())

  def spent(self) -> float:  # The mechanism remembers ε for each count.
    return self.mechanism.epsilon(self.accounted())

  def account(self) -> None:
    """Appends ledger segments for the executions not yet in it (one per
    piece of a noise schedule they cross)."""
    first = self.ledger.executions()
    done = 0
    for segment in self.mechanism.history(self.progress.executed):
      start, done = done, done + segment['count']
      if done > first:
        self.ledger.append('segment', {
            'event': segment['event'], 'first': max(first, start),
            'count': done - max(first, start),
            'epsilon': json_number(self.mechanism.epsilon(done))})

  def checkpoint(self, state) -> None:
    """Accounts, then saves `state` unless nothing ran since the newest."""
    progress = self.progress
    self.account()
    if self.newest == progress.executed:
      return  # Nothing ran since the newest checkpoint.
    self.checkpointer.save(progress.executed, state, dict(
        progress.to_json(), privacy=self.settings,
        logical_step=int(state.step),
        # The accountant's history: every execution so far, one DpEvent each.
        history=self.mechanism.history(self.accounted()),
        config=json.loads(self.config.to_json()),
        ledger={'entries': len(self.ledger.entries),
                'head': self.ledger.head}))
    self.newest = progress.executed
    self.ledger.append('checkpoint', {'executed': progress.executed,
                                      'step': int(state.step)})

  def begin(self, state, meta: Optional[dict], evaluate) -> None:
    """The ledger's `run_start` and first checkpoint, or its `resume`."""
    mechanism, progress = self.mechanism, self.progress
    common = {'config_hash': run_identity.config_hash(self.config),
              'code_version': run_identity.code_version()}
    if meta is None:
      self.ledger.append('run_start', dict(
          common, privacy=self.settings,
          step_event=event_history.event_to_json(mechanism.step_event()),
          step_pieces=[[count, event_history.event_to_json(event)]
                       for count, event in mechanism.pieces()],
          setup_event=self.settings['setup_event'],
          planned_steps=mechanism.num_steps))
      # The loss at initialisation is the first baseline for spike detection
      # (held-out data: no privacy cost).
      progress.best_eval_loss, _ = evaluate(state.params)
      self.checkpoint(state)
      return
    self.ledger.append('resume', dict(common, executed=progress.executed,
                                      step=int(state.step),
                                      planned_steps=mechanism.num_steps))
    self.log(f'resumed from {self.checkpointer.directory}/{self.newest}: '
             f'step {int(state.step)}, {progress.executed} steps executed, '
             f'ε {self.spent():.4f} spent')
    changed = changed_fields(meta['config'], json.loads(self.config.to_json()))
    if changed:  # Allowed (the privacy settings were checked), but said.
      self.log('settings changed since the checkpoint (none that decides '
               'the guarantee): ' + ', '.join(changed))

  def rollback(self, state, why: str, step: int) -> tuple:
    """Rolls back to the newest checkpoint; (state, whether the run stops)."""
    progress, placement = self.progress, self.placement
    # Draws from here on are fresh, even if this happened while re-running
    # steps lost in a crash: those draws were spent by the lost run.
    progress.executed = self.accounted()
    self.account()
    latest = self.newest
    restored, meta = self.checkpointer.restore(latest, state)
    restored = placement.put_state(restored.replace(
        opt_state=noise.with_noise_step(restored.opt_state,
                                        progress.executed)))
    event = {'reason': why, 'step': step, 'executed': progress.executed,
             'to_step': int(restored.step), 'to_checkpoint': latest,
             'epsilon': json_number(self.spent())}
    if progress.rollbacks >= self.config.recovery.max_rollbacks:
      self.ledger.append('divergence_stop', event)
      self.log(f'step {step}: diverged ({why}) after {progress.rollbacks} '
               f'rollbacks: stopping at the newest checkpoint (step '
               f'{int(restored.step)})')
      self.checkpoint(restored)  # Anchors the spending in a checkpoint.
      return restored, True
    lr_scale = float(restored.lr_scale) * self.config.recovery.lr_factor
    restored = placement.put_state(
        restored.replace(lr_scale=jnp.asarray(lr_scale, jnp.float32)))
    progress.rollbacks += 1
    progress.best_eval_loss = meta['best_eval_loss']
    event['lr_scale'] = lr_scale
    progress.rollback_log.append(event)
    self.ledger.append('rollback', event)
    self.log(f'step {step}: diverged ({why}); rolled back to step '
             f'{int(restored.step)} (checkpoint {latest}), learning rate × '
             f'{lr_scale:g}; the {progress.executed - latest} steps since '
             'stay accounted')
    self.checkpoint(restored)
    return restored, False

  def interrupted(self, state, received: Optional[str]) -> tuple:
    """Saves a run stopped by a signal; (state, whether it diverged)."""
    # One name on every host (each host keeps the same ledger chain).
    stop_signal = (received if jax.process_count() == 1
                   else 'SIGTERM (JAX preemption notice) or SIGINT on one of '
                   'the hosts')
    stopped = False
    if divergence.params_finite(state.params):
      self.checkpoint(state)
    else:  # Never save a broken state: recover first, as at an evaluation.
      state, stopped = self.rollback(state, 'the parameters are not all '
                                     'finite', int(state.step))
    self.ledger.append('interrupted', {'signal': stop_signal,
                                       'step': int(state.step),
                                       'executed': self.progress.executed,
                                       'epsilon': json_number(self.spent())})
    self.log(f'{stop_signal} at step {int(state.step)}: checkpoint saved; '
             'rerun the same command to resume')
    return state, stopped

  def budget_stop(self, state, budget) -> None:
    """Saves a run whose next step would exceed its ε budget."""
    mechanism = self.mechanism
    done = int(state.step)
    self.checkpoint(state)
    remaining = budget.remaining(self.accounted())
    self.ledger.append('budget_stop', {
        'step': done, 'executed': self.progress.executed,
        'epsilon': json_number(self.spent()), 'remaining': remaining})
    why = ('one more step would exceed it'
           if mechanism.epsilon(self.accounted() + 1) > mechanism.target_epsilon
           else 'the budget search stopped at its cap of '
           f'{budget.last_affordable} executions')
    self.log(f'budget: stopped at step {done}/{mechanism.num_steps} after '
             f'{self.progress.executed} executed steps; ε {self.spent():.4f} '
             f'of the target {mechanism.target_epsilon:g} is spent, '
             f'{remaining:.4g} remains, and {why}')

  def final(self, status: str, step: int, accuracy: Optional[float]) -> None:
    """The ledger's last entry: how the run ended and what it spent."""
    self.ledger.append('final', {'status': status, 'step': step,
                                 'executed': self.accounted(),
                                 'epsilon': json_number(self.spent()),
                                 'delta': self.mechanism.delta,
                                 'accuracy': accuracy})

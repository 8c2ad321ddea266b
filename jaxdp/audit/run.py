"""`run_audit`: builds the audited mechanism and model, runs one audit mode.

The mechanism is built by `mechanism.build_mechanism` from `config.dp`, as
for training, over the real training examples plus every canary (present or
not: the sampling rate q = B / (n + m) is fixed and public, and an absent
canary's slot is simply never filled), then `mutations.mutate` applies the
requested bug. The claimed ε is what that mechanism reports.
"""

import dataclasses
import math
import time
from typing import Optional

from jaxdp import data
from jaxdp import sharding
from jaxdp.audit import canaries as canaries_lib
from jaxdp.audit import modes
from jaxdp.audit import mutations
from jaxdp.audit import training
from jaxdp.errors import ConfigError
from jaxdp.mechanism import build_mechanism


# Fewer canaries per run can hardly refute anything, and may all be
# present (or all absent), which leaves no ROC.
MIN_CANARIES = 20


@dataclasses.dataclass(frozen=True)
class AuditSettings:
  mode: str = 'one_run'  # One of modes.MODES.
  canaries: int = 1000  # one_run, lira: canaries per run; multi_run: runs.
  canary_type: str = 'gradient'  # One of canaries.CANARY_KINDS.
  mutation: str = 'none'  # One of mutations.MUTATIONS.
  shadow_models: int = 16  # lira only.
  confidence: float = 0.95


def check(settings: AuditSettings, config) -> None:
  """ConfigError for a setting that cannot give a meaningful audit."""
  if settings.mode not in modes.MODES:
    raise ConfigError('--mode', f'unknown mode {settings.mode!r}',
                      f'use one of {", ".join(modes.MODES)}')
  if not 0 < settings.confidence < 1:
    raise ConfigError('--confidence', f'must be in (0, 1), got '
                      f'{settings.confidence}', 'use e.g. 0.95')
  if settings.mode == 'multi_run' and settings.canaries < 4:
    raise ConfigError('--canaries', f'{settings.canaries} runs are too few '
                      'for a multi-run audit', 'use hundreds of runs')
  if settings.mode == 'lira' and settings.shadow_models < 3:
    raise ConfigError('--shadow_models', f'must be >= 3, got '
                      f'{settings.shadow_models}', 'use 16 or more')
  if config.task != 'classification':
    raise ConfigError('task', 'audits train image classifiers',
                      'use an image-classification config, e.g. '
                      'configs/audit.py')
  for field, value in (('data.augmult', config.data.augmult),
                       ('dp.pca_components', config.dp.pca_components),
                       ('dp.normalization_noise_multiplier',
                        config.dp.normalization_noise_multiplier)):
    if value:
      raise ConfigError(field, f'is {value}, but audits run the plain DP-SGD '
                        'step, without augmentation multiplicity or releases '
                        'before training', f'set {field}=0')
  if settings.mode != 'multi_run' and settings.canaries < MIN_CANARIES:
    raise ConfigError('--canaries', f'{settings.canaries} canaries are too '
                      f'few for a {settings.mode} audit',
                      f'use at least {MIN_CANARIES} (hundreds for a bound '
                      'worth having)')


@dataclasses.dataclass(frozen=True)
class Audit:
  """One audit's outcome."""

  settings: AuditSettings
  mechanism: object  # The (possibly mutated) DpMechanism that ran.
  epsilon_claimed: Optional[float]  # None for a non-private run.
  result: modes.AuditResult
  wall_seconds: float
  data: str  # Where the training data came from.


def run_audit(config, settings: AuditSettings, log=print) -> Audit:
  """Runs the audit `settings` describes on `config`."""
  check(settings, config)
  start = time.time()
  dataset = data.load_dataset(config.data)
  per_run = 1 if settings.mode == 'multi_run' else settings.canaries
  canaries = canaries_lib.make(settings.canary_type, per_run, dataset,
                               config.seed)
  placement = sharding.Placement(sharding.make_mesh(config.perf.num_devices),
                                 config.perf.param_sharding)
  mechanism = build_mechanism(
      config.dp, config.perf, dataset.num_train + canaries.count,
      config.train.num_steps, config.train.num_epochs, config.seed,
      num_devices=placement.num_devices)
  mechanism = mutations.mutate(mechanism, settings.mutation)
  claimed = mechanism.epsilon()
  accounted_q = getattr(mechanism.step_event(), 'sampling_probability',
                        mechanism.sampling_probability)
  told = ('' if math.isclose(accounted_q, mechanism.sampling_probability)
          else f', accounted as q = {accounted_q:.4g}')
  groups = getattr(mechanism.sampler, 'groups', 1)
  if groups > 1:
    told += (f', {mechanism.link.name} noise, {groups} cyclic groups at '
             f'q\' = {mechanism.sampler.group_sampling_probability:.4g}')
  log(f'audit: {settings.mode}, {settings.canary_type} canaries, mutation '
      f'{settings.mutation}; claimed ε = {claimed:.4g} at δ = '
      f'{mechanism.delta:g} (σ = {mechanism.noise_multiplier:.4g}, q = '
      f'{mechanism.sampling_probability:.4g}{told}, {mechanism.num_steps} '
      'steps)')
  trainer = training.AuditTrainer(config, dataset, canaries, mechanism,
                                  placement)
  if settings.mode == 'one_run':
    result = modes.one_run(trainer, config.seed, settings.confidence)
  elif settings.mode == 'multi_run':
    result = modes.multi_run(trainer, settings.canaries, config.seed,
                             settings.confidence)
  else:
    result = modes.lira(trainer, settings.shadow_models, config.seed,
                        settings.confidence)
  return Audit(settings, mechanism,
               claimed if math.isfinite(claimed) else None, result,
               time.time() - start, dataset.source)

"""Builds everything that decides the privacy guarantee from `config.dp`.

`build_mechanism` is the only place where the sampler, the clipping norm, the
noise and the accountant's DpEvent are put together, so they cannot disagree:

* the sampler fixes the sampling probability q and the neighbouring relation;
* the relation fixes the sensitivity of the clipped sum (C or 2C);
* the noise std is σ·C, and the accountant is told σ·C / sensitivity;
* the DpEvent of a step is the sampler's own event around that Gaussian.

Performance settings (`config.perf`) are accepted here only to shape the
computation (microbatch size, padding); they never enter the DpEvent, so they
cannot change ε.
"""

import dataclasses
import functools
import math
from typing import Optional

import dp_accounting
import ml_collections

from jaxdp import accounting
from jaxdp import clipping
from jaxdp.accounting import history as event_history
from jaxdp import noise
from jaxdp import private_releases
from jaxdp import sampling
from jaxdp.errors import ConfigError
from jaxdp.streams import MAX_CONFIG_SEED  # Re-exported: part of the API.
from jaxdp.streams import noise_key
from jaxdp.streams import secure_seed  # Re-exported: part of the API.

__all__ = ['DpMechanism', 'MAX_CONFIG_SEED', 'build_mechanism', 'hand_built_dp',
           'noise_key', 'secure_seed', 'steps_from_epochs']


def hand_built_dp(**core) -> ml_collections.ConfigDict:
  """A `config.dp` with the fields in `core` and every optional mechanism
  off: no releases before training, a constant σ, a fixed C, Gaussian noise,
  global clipping (configs/base.py's defaults; tests/test_conformance.py
  checks they agree). For dp configs built by hand, not from base.py."""
  return ml_collections.ConfigDict({
      **private_releases.NO_RELEASES,
      'noise_schedule': 'constant', 'noise_schedule_final_ratio': 1.0,
      'noise_schedule_segments': 10, 'adaptive_clip_quantile': 0.0,
      'adaptive_clip_learning_rate': 0.2, 'adaptive_clip_count_noise': None,
      'noise_mechanism': 'gaussian', 'clip_rule': 'global',
      'per_layer_clip_split': 'equal', 'mf_bands': 4, 'mf_buffers': 4,
      **core})


def steps_from_epochs(num_epochs: float, sampling_probability: float) -> int:
  """Steps for `num_epochs` expected passes: ceil(epochs / q)."""
  return int(math.ceil(num_epochs / sampling_probability - 1e-9))


@dataclasses.dataclass(frozen=True)
class DpMechanism:
  """The coupled sampler + clipping + noise + accounting of one DP run."""

  sampler: object  # sampling.PoissonSampler | sampling.FixedSizeSampler
  clip_norm: float
  noise_multiplier: float  # σ: noise std on the sum is σ·C.
  num_steps: int
  delta: float
  accountant: str
  target_epsilon: Optional[float]
  microbatch_size: Optional[int]
  clipping_method: str = 'fast'  # Performance only: results agree.
  # Releases made once before step 1 (DP-PCA, released normalisation; see
  # private_releases.py), composed with the steps in every ε.
  setup_event: Optional[dp_accounting.DpEvent] = None
  # What privatises the clipped sum and what the accountant is told of it
  # (`jaxdp.noise.LINKS`, dp.noise_mechanism): Gaussian noise on a σ
  # schedule, adaptive clipping's link (which owns C_t), ...
  link: noise.NoiseLink = noise.gaussian.GaussianLink()
  # How each example's gradient is bounded (`jaxdp.clipping.RULES`,
  # dp.clip_rule); every rule's contributions have norm ≤ clip_norm.
  clip_rule: clipping.ClipRule = clipping.RULES['global']()

  @property
  def noise_std(self) -> float:
    return 0.0 if self.noise_multiplier == 0 else (
        self.noise_multiplier * self.clip_norm)

  @property
  def neighboring_relation(self) -> dp_accounting.NeighboringRelation:
    return self.sampler.neighboring_relation

  @property
  def sensitivity(self) -> float:
    return clipping.sensitivity(self.clip_norm, self.neighboring_relation)

  @property
  def expected_batch_size(self) -> float:
    return self.sampler.expected_batch_size

  @property
  def sampling_probability(self) -> float:
    return self.sampler.sampling_probability

  @property
  def is_private(self) -> bool:
    return self.noise_multiplier > 0 and math.isfinite(self.clip_norm)

  def pieces(self) -> list:
    """[(count, one step's DpEvent)] of the planned steps, in order (the
    link's: one piece for a constant σ, a schedule's pieces otherwise).
    Steps past the planned ones (a run extended after rollbacks) repeat the
    last piece."""
    return self.link.pieces(self)

  def step_event(self) -> dp_accounting.DpEvent:
    """The DpEvent of the first step (of every step for a constant σ)."""
    return self.pieces()[0][1]

  def history(self, executions: int) -> list:
    """The first `executions` steps as event_history Segments (JSON)."""
    return [event_history.Segment(event_history.event_to_json(event),
                                  count).to_json()
            for count, event in accounting.first_steps(self.pieces(),
                                                       executions)]

  def dp_event(self, num_steps: Optional[int] = None) -> dp_accounting.DpEvent:
    """The DpEvent of the first `num_steps` steps (default: the whole run)."""
    steps = self.num_steps if num_steps is None else int(num_steps)
    if steps == 0 and self.setup_event is None:
      return dp_accounting.NoOpDpEvent()
    return accounting.schedule_event(self.pieces(), steps, self.setup_event)

  def epsilon(self, num_steps: Optional[int] = None) -> float:
    """ε at `delta` after `num_steps` steps (inf for a non-private run)."""
    steps = self.num_steps if num_steps is None else int(num_steps)
    if steps == 0:  # Only the release before step 1, if any, is spent.
      return 0.0 if self.setup_event is None else self._epsilon_after(0)
    if not self.is_private:
      return math.inf
    return self._epsilon_after(steps)

  @functools.cached_property
  def _epsilon_after(self):
    return accounting.epsilon_after_pieces(
        self.accountant, self.neighboring_relation, self.pieces(), self.delta,
        self.setup_event)

  def clipped_grad_sum(self, batch_loss: clipping.BatchLoss,
                       clip_norm=None) -> clipping.ClippedSum:
    """f(params, batch, mask) -> (clipped sum, stats) with this run's rule.

    `clip_norm` (possibly traced) replaces C: the C_t a link owns.
    """
    return clipping.clipped_sum(
        batch_loss, self.clip_norm if clip_norm is None else clip_norm,
        self.clip_rule, self.clipping_method, self.microbatch_size)

  def noise_transform(self, seed: int):
    """The optax transformation adding this run's noise, once per step."""
    return self.link.transform(self, noise_key(seed))

  def privacy_settings(self) -> dict:
    """The link's and the rule's settings: what a resume may not change."""
    return {**self.link.settings(), **self.clip_rule.settings()}

  def summary(self) -> dict:
    """What a reader needs to interpret the guarantee (JSON-ready)."""
    eps = self.epsilon()
    return {
        'epsilon': eps if math.isfinite(eps) else None,
        'delta': self.delta,
        'noise_multiplier': self.noise_multiplier,
        'clip_norm': self.clip_norm if math.isfinite(self.clip_norm) else None,
        'steps': self.num_steps,
        'sampling_probability': self.sampling_probability,
        'expected_batch_size': self.expected_batch_size,
        'num_examples': self.sampler.num_examples,
        'sampler': self.sampler.name,
        'neighboring_relation': self.neighboring_relation.name.lower(),
        'accountant': self.accountant,
        'target_epsilon': self.target_epsilon,
        'setup_event': None if self.setup_event is None
                       else event_history.event_to_json(self.setup_event),
        **self.link.summary(),
        **self.clip_rule.summary(),
    }


def _target(dp) -> Optional[float]:
  """dp.target_epsilon, with inf (settable from the command line) = none."""
  t = dp.target_epsilon
  return None if t is None or (math.isinf(t) and t > 0) else float(t)


def _calibrate(dp, relation, make_event, target: float) -> float:
  try:
    return accounting.calibrate_noise_multiplier(
        dp.accountant, relation, make_event, target, dp.delta)
  except Exception as e:  # dp-accounting raises several types here.
    raise ConfigError(
        'dp.target_epsilon',
        f'could not calibrate σ for ε={target} ({type(e).__name__}: {e})',
        'raise the target ε or δ, train for fewer steps, or add noise to the '
        'releases before training (dp.pca_noise_multiplier, '
        'dp.normalization_noise_multiplier) if they alone exceed it') from e


def _check_dp_fields(dp, num_examples: int) -> None:
  """Raises ConfigError for values that make no sense on their own."""
  target = _target(dp)
  if dp.accountant not in accounting.ACCOUNTANTS:
    raise ConfigError('dp.accountant', f'unknown accountant {dp.accountant!r}',
                      f'use one of {", ".join(accounting.ACCOUNTANTS)}')
  if not dp.clip_norm > 0:
    raise ConfigError('dp.clip_norm', f'must be > 0, got {dp.clip_norm}',
                      'set a positive clipping norm, e.g. dp.clip_norm=1.0')
  if dp.noise_multiplier is not None and not dp.noise_multiplier >= 0:
    raise ConfigError('dp.noise_multiplier',
                      f'must be >= 0, got {dp.noise_multiplier}',
                      'set σ >= 0, or leave it unset to calibrate it from '
                      'dp.target_epsilon')
  if target is not None and not target > 0:
    raise ConfigError('dp.target_epsilon',
                      f'must be > 0, got {dp.target_epsilon}',
                      'set a positive target ε, e.g. dp.target_epsilon=3')
  if not 0 < dp.delta < 1:
    raise ConfigError('dp.delta', f'must be in (0, 1), got {dp.delta}',
                      'use δ well below 1/N, e.g. dp.delta=1e-5')
  if dp.delta >= 1.0 / num_examples and not dp.allow_large_delta:
    raise ConfigError(
        'dp.delta',
        f'δ={dp.delta} is not below 1/N={1.0 / num_examples:.3g}: a mechanism '
        'that publishes one whole random example satisfies it',
        f'use δ < 1/N (e.g. {10 ** math.floor(math.log10(0.1 / num_examples)):g})'
        ' or set dp.allow_large_delta=True to accept it knowingly')
  if dp.noise_multiplier is None and target is None:
    raise ConfigError(
        'dp.noise_multiplier',
        'neither dp.noise_multiplier nor dp.target_epsilon is set',
        'set dp.target_epsilon to calibrate σ, or dp.noise_multiplier '
        '(0 for a non-private baseline)')
  non_private = dp.noise_multiplier == 0 or math.isinf(dp.clip_norm)
  if non_private and target is not None:
    raise ConfigError(
        'dp.noise_multiplier',
        f'σ={dp.noise_multiplier}, C={dp.clip_norm} is not private, but '
        f'dp.target_epsilon={dp.target_epsilon} was asked for',
        'unset dp.noise_multiplier to calibrate it, or set '
        'dp.target_epsilon=inf for a non-private baseline')
  if math.isinf(dp.clip_norm) and dp.noise_multiplier not in (0, 0.0):
    raise ConfigError('dp.clip_norm',
                      'unbounded clipping with noise gives no guarantee',
                      'set a finite dp.clip_norm, or dp.noise_multiplier=0')


def _check_perf(perf) -> None:
  """ConfigError for performance settings that cannot run."""
  clipping.check_method(perf.clipping)
  if perf.microbatch_size is not None and perf.microbatch_size <= 0:
    raise ConfigError('perf.microbatch_size',
                      f'must be > 0, got {perf.microbatch_size}',
                      'set a positive microbatch size, or leave it unset')


def _planned_steps(num_steps: Optional[int], num_epochs: Optional[float],
                   sampling_probability: float) -> int:
  """train.num_steps, or the steps of train.num_epochs expected passes."""
  if num_steps is None:
    if num_epochs is None or not num_epochs > 0:
      raise ConfigError('train.num_epochs', f'must be > 0, got {num_epochs}',
                        'set train.num_epochs or train.num_steps')
    num_steps = steps_from_epochs(num_epochs, sampling_probability)
  if not num_steps > 0:
    raise ConfigError('train.num_steps', f'must be > 0, got {num_steps}',
                      'set a positive number of steps')
  return int(num_steps)


def _resolve_sigma(dp, with_sigma, relation, target: Optional[float],
                   resumed: Optional[float]) -> DpMechanism:
  """The mechanism at the resumed σ, dp's σ (checked against the target),
  or the σ calibrated to the target; each checked by its noise link."""
  make_event = lambda s: with_sigma(s).dp_event()
  if resumed is not None:
    if dp.noise_multiplier is not None and dp.noise_multiplier != resumed:
      raise ConfigError(
          'dp.noise_multiplier',
          f'σ={dp.noise_multiplier}, but the run being resumed used '
          f'σ={resumed}',
          'leave dp.noise_multiplier unset (or set the original σ) to resume, '
          'or start a new run in a new --workdir')
    sigma = resumed
  elif dp.noise_multiplier is None:
    sigma = _calibrate(dp, relation, make_event, target)
  else:
    sigma = dp.noise_multiplier
  mechanism = with_sigma(sigma)
  mechanism.link.check(mechanism)
  if resumed is None and dp.noise_multiplier is not None and (
      target is not None):
    eps = mechanism.epsilon()
    if eps > target:
      needed = _calibrate(dp, relation, make_event, target)
      raise ConfigError(
          'dp.noise_multiplier',
          f'σ={dp.noise_multiplier} for {mechanism.num_steps} steps gives '
          f'ε={eps:.4g} > dp.target_epsilon={target} ({dp.accountant}, '
          f'δ={dp.delta})',
          f'use σ ≥ {needed:.4g}, fewer steps, or leave dp.noise_multiplier '
          'unset to calibrate it')
  return mechanism


def build_mechanism(dp, perf, num_examples: int, num_steps: Optional[int],
                    num_epochs: Optional[float], seed: int,
                    resumed_noise_multiplier: Optional[float] = None,
                    num_devices: int = 1) -> DpMechanism:
  """Builds the coupled DP mechanism of a run.

  Args:
    dp: `config.dp` (sampler, batch_size, clip_norm, noise_multiplier,
      target_epsilon, delta, accountant, allow_large_delta, the noise link's
      and the clip rule's fields).
    perf: `config.perf` (clipping, microbatch_size,
      batch_overflow_probability).
    num_examples: N, the number of private training examples.
    num_steps: logical steps; if None, derived from `num_epochs`.
    num_epochs: expected passes over the data, used when num_steps is None.
    seed: seeds the sampler.
    resumed_noise_multiplier: σ of the run being resumed. It is kept (a
      σ set in `dp` must equal it), and the target is then enforced step by
      step by `budget.Budget` instead of being checked for all planned steps.
    num_devices: devices the batch is split over. Padded batches are a
      multiple of num_devices × perf.microbatch_size, so that every device
      gets whole microbatches; the draws and the DpEvent do not depend on it.

  Returns:
    A DpMechanism whose ε for the whole run is ≤ dp.target_epsilon if set.

  Raises:
    ConfigError: for invalid settings, or a budget the settings cannot meet.
  """
  _check_dp_fields(dp, num_examples)
  _check_perf(perf)
  link_class = noise.link_class(dp)
  # A link may bring the sampler its accounting assumes (cyclic Poisson
  # sampling for matrix factorisation); otherwise dp.sampler's.
  shape = dict(multiple_of=(perf.microbatch_size or 1) * num_devices,
               overflow_probability=perf.batch_overflow_probability)
  if hasattr(link_class, 'make_sampler'):
    sampler = link_class.make_sampler(dp, num_examples, dp.batch_size, seed,
                                      **shape)
  else:
    sampler = sampling.make_sampler(dp.sampler, num_examples, dp.batch_size,
                                    seed, **shape)
  steps = _planned_steps(num_steps, num_epochs, sampler.sampling_probability)
  link = link_class.from_config(dp, sampler.expected_batch_size, steps)
  rule = clipping.rule_from_config(dp)

  def with_sigma(sigma: float) -> DpMechanism:
    return DpMechanism(sampler=sampler, clip_norm=float(dp.clip_norm),
                       noise_multiplier=float(sigma), num_steps=steps,
                       delta=float(dp.delta), accountant=dp.accountant,
                       target_epsilon=_target(dp),
                       microbatch_size=perf.microbatch_size,
                       clipping_method=perf.clipping,
                       setup_event=private_releases.setup_event(dp),
                       link=link, clip_rule=rule)

  private_releases.check_fields(dp, sampler.neighboring_relation.name.lower())
  accounting.check_supported(dp.accountant, sampler.neighboring_relation,
                             with_sigma(1.0).step_event())
  return _resolve_sigma(dp, with_sigma, sampler.neighboring_relation,
                        _target(dp), resumed_noise_multiplier)

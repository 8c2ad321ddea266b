"""One tuning trial: train a candidate with DP-SGD, release a noisy score.

A trial trains on the whole private training split and is scored on the
same split: its score is the count of correct predictions plus N(0, σ_s²)
(sensitivity 1: one example adds, removes or changes one prediction),
divided by N (public, as it is for q = B / N). Scoring on the training data
needs no split of it: a split by any rule that depends on N or on the other
examples would move many examples between the parts when one is added or
removed, and the trial would no longer be the mechanism accounted. (A DP
model's training accuracy tracks its test accuracy closely.) The test split
is never used to choose: it only reports the released model's accuracy.

Each trial builds its own mechanism (`build_mechanism`: Poisson sampler, C,
σ, expected batch size), checks that it is the one `tuning.privacy`
accounted, and runs exactly its steps in a lean loop (no checkpoints or
ledger), like the audit's trainer.
"""

import dataclasses

import dp_accounting
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdp import streams
from jaxdp.tasks import image as image_task
from jaxdp import models
from jaxdp import clipping
from jaxdp import noise
from jaxdp import optimizers
from jaxdp import private_releases
from jaxdp import sharding
from jaxdp.train import step as steps_lib
from jaxdp.data.dataset import Dataset
from jaxdp.errors import ConfigError
from jaxdp.mechanism import DpMechanism
from jaxdp.mechanism import build_mechanism
from jaxdp.train.loop import _batch_arrays

# optimizer.name values whose update is the learning rate times a direction
# (optimizers.build_optimizer, constant schedule): a trial scales by it.
LINEAR_IN_LEARNING_RATE = ('sgd', 'adam', 'adamw')


@dataclasses.dataclass(frozen=True)
class TrialResult:
  candidate: dict
  noise_multiplier: float
  steps: int
  score: float  # Noisy training accuracy: the released score.
  test_accuracy: float  # Of this trial's model (reported, never used).
  params: object = dataclasses.field(repr=False, default=None)


def check_config(config) -> None:
  """Raises ConfigError for settings a tuning trial does not run as set."""
  dp, opt = config.dp, config.optimizer
  if dp.sampler != 'poisson':
    raise ConfigError('dp.sampler', f'tuning accounts Poisson sampling, got '
                      f'{dp.sampler!r}', 'use dp.sampler=poisson')
  if dp.noise_schedule != 'constant' or dp.adaptive_clip_quantile != 0:
    raise ConfigError('dp.noise_schedule' if dp.noise_schedule != 'constant'
                      else 'dp.adaptive_clip_quantile',
                      'tuning trials use a constant σ and a fixed C',
                      'leave the schedule constant and adaptive clipping off')
  if dp.noise_mechanism != 'gaussian':
    raise ConfigError('dp.noise_mechanism', 'tuning trials add Gaussian '
                      f'noise of a fixed σ, got {dp.noise_mechanism!r}',
                      'use dp.noise_mechanism=gaussian')
  if private_releases.setup_event(dp) is not None:
    raise ConfigError('dp.pca_components', 'tuning trials make no releases '
                      'before training', 'turn DP-PCA and released '
                      'normalisation off')
  if config.data.augmult:
    raise ConfigError('data.augmult', 'tuning trials use one view per '
                      'example', 'set data.augmult=0')
  if opt.name not in LINEAR_IN_LEARNING_RATE:
    raise ConfigError('optimizer.name', f'tuning supports '
                      f'{", ".join(LINEAR_IN_LEARNING_RATE)}, got {opt.name!r}',
                      'use optimizer.name=sgd, adam or adamw for tuning')
  for field, plain in (('schedule', 'constant'), ('warmup_steps', 0),
                       ('ema_decay', 0.0)):
    if opt[field] != plain:
      raise ConfigError(f'optimizer.{field}', f'tuning trials do not apply '
                        f'it (got {opt[field]!r})', f'set it to {plain!r}')


class TrialRunner:
  """Trains candidates on the training split and scores them privately.

  The step is compiled once per padded batch shape and reused by every
  trial: C, σ·C, the expected batch size and the learning rate are its
  arguments, not constants (otherwise each trial would spend far longer
  compiling than training). What they are comes from each trial's own
  `build_mechanism`: its sampler draws the batches, its C and σ·C are
  passed in, its expected batch size divides the noisy sum.
  """

  def __init__(self, config, dataset: Dataset, score_noise: float):
    check_config(config)
    self.config = config
    self.dataset = dataset
    self.score_noise = score_noise
    model = models.build_model(config.model, dataset.num_classes)
    self.task = image_task.from_dataset(config, dataset, model)
    self.eval_step = steps_lib.make_eval_step(model.apply)
    self.placement = sharding.Placement(sharding.make_mesh(1))
    # The configured optimizer at learning rate 1; each trial's rate scales
    # its updates (exactly the rate inside: these optimizers end with
    # scale_by_learning_rate), so the rate is a traced argument.
    unit = config.optimizer.copy_and_resolve_references()
    unit.learning_rate = 1.0
    self.optimizer = optimizers.build_optimizer(unit, num_steps=1)
    self.rule = clipping.rule_from_config(config.dp)
    self._step = jax.jit(self._train_step, donate_argnums=(0, 1))

  @property
  def num_train(self) -> int:
    return self.dataset.num_train

  def _train_step(self, params, opt_state, batch, key, step, clip_norm,
                  noise_std, expected_batch_size, learning_rate):
    # The mechanism's clipped sum (its method; C passed in), its noisy mean
    # (noise.noisy_mean, as in the training step), then the optimizer.
    grad_sum, _ = clipping.clipped_sum(
        self.task.batch_loss, clip_norm, self.rule, self.config.perf.clipping,
        self.config.perf.microbatch_size)(params, batch['inputs'],
                                          batch['mask'])
    mean = noise.noisy_mean(grad_sum, key, step, noise_std,
                            expected_batch_size)
    updates, opt_state = self.optimizer.update(mean, opt_state, params)
    updates = jax.tree_util.tree_map(lambda u: u * learning_rate, updates)
    return optax.apply_updates(params, updates), opt_state

  def mechanism(self, candidate: dict, sigma: float,
                privacy_seed: int) -> DpMechanism:
    """The trial's coupled sampler, clipping, noise and DpEvent."""
    config = self.config.copy_and_resolve_references()
    config.dp.batch_size = candidate['batch_size']
    config.dp.clip_norm = candidate['clip_norm']
    config.dp.noise_multiplier = sigma
    config.dp.target_epsilon = None  # Planned by tuning.privacy instead.
    return build_mechanism(config.dp, config.perf, self.num_train, None,
                           candidate['epochs'], privacy_seed)

  def run(self, candidate: dict, sigma: float, steps: int, init_seed: int,
          privacy_seed: int) -> TrialResult:
    """Trains `candidate` with noise multiplier `sigma`; scores it.

    `steps` is what the plan accounted; the trial's own mechanism must
    agree (Poisson, add/remove, q = B / N, those steps, σ).
    """
    mechanism = self.mechanism(candidate, sigma, privacy_seed)
    event = mechanism.dp_event()
    step = event.event
    agrees = (isinstance(step, dp_accounting.PoissonSampledDpEvent)
              and mechanism.neighboring_relation
              == dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE
              and event.count == steps and mechanism.noise_multiplier == sigma
              and step.sampling_probability
              == candidate['batch_size'] / self.num_train
              # σC / C, up to the rounding of that division.
              and abs(step.event.noise_multiplier - sigma) <= 1e-12 * sigma)
    if not agrees:
      raise RuntimeError(f'the trial\'s mechanism {event} is not the one '
                         f'accounted: Poisson, add/remove, q = B/N, {steps} '
                         f'steps, σ = {sigma}')
    params, _ = self.task.init(streams.init_key(init_seed))
    opt_state = self.optimizer.init(params)
    key = streams.noise_key(privacy_seed)
    # Clipping runs with float32 C; the noise follows it, rounded up: never
    # less noise than accounted for the sensitivity used.
    clip32 = np.float32(mechanism.clip_norm)
    std = noise.round_up_f32(noise.gaussian.std_for_float32_clip(
        mechanism.noise_std, mechanism.clip_norm))
    scalars = [jnp.asarray(x, jnp.float32) for x in (
        clip32, std, mechanism.expected_batch_size,
        candidate['learning_rate'])]
    for t in range(mechanism.num_steps):
      batch = _batch_arrays(self.task, mechanism.sampler.sample(t),
                            self.placement, t)
      params, opt_state = self._step(params, opt_state, batch, key,
                                     jnp.asarray(t, jnp.int32), *scalars)
    score = self._noisy_accuracy(params, privacy_seed)
    _, test_accuracy = self.task.evaluate(params, self.placement)
    return TrialResult(candidate=candidate, noise_multiplier=sigma,
                       steps=mechanism.num_steps, score=score,
                       test_accuracy=float(test_accuracy), params=params)

  def _noisy_accuracy(self, params, privacy_seed: int) -> float:
    """(correct training predictions + N(0, σ_s²)) / N."""
    size = min(self.config.eval.batch_size, self.num_train)
    _, accuracy = steps_lib.evaluate(
        self.eval_step, params, self.dataset.train_images,
        self.dataset.train_labels, size, self.placement)
    correct = round(accuracy * self.num_train)
    rng = np.random.default_rng([privacy_seed, streams.SCORE_STREAM])
    return float((correct + self.score_noise * rng.standard_normal())
                 / self.num_train)

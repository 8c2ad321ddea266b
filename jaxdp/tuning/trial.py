"""One tuning trial: train a candidate with DP-SGD, release a noisy score.

The private training split is cut once, by a fixed public rule (a
permutation from a constant seed, independent of the data), into the examples
trials train on and a validation part that scores them. A trial's score is
the count of correct validation predictions plus N(0, σ_v²) (sensitivity 1),
divided by the (public) size of the validation part. The test split is never
used to choose: it only reports the released model's accuracy.

Each trial builds its own mechanism (`build_mechanism`: sampler, C, σ,
expected batch size) and runs exactly its accounted steps in a lean loop (no
checkpoints or ledger), like the audit's trainer.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdp import image_task
from jaxdp import models
from jaxdp import noise
from jaxdp import sharding
from jaxdp import steps as steps_lib
from jaxdp.data.dataset import Dataset
from jaxdp.errors import ConfigError
from jaxdp.mechanism import build_mechanism
from jaxdp.mechanism import clipped_grad_sum
from jaxdp.mechanism import noise_key
from jaxdp.train import INIT_STREAM
from jaxdp.train import _batch_arrays

# The public permutation that cuts off the validation part.
SPLIT_SEED = 0x5B17
# Separates the validation count's noise from the trial's other streams.
VALIDATION_STREAM = 0x7A1


def split_validation(dataset: Dataset, fraction: float) -> tuple:
  """(trials' dataset whose 'test' split is the validation part, the real
  test images, the real test labels)."""
  order = np.random.default_rng(SPLIT_SEED).permutation(dataset.num_train)
  cut = int(round(fraction * dataset.num_train))
  val, train = order[:cut], order[cut:]
  inner = dataclasses.replace(
      dataset, train_images=dataset.train_images[train],
      train_labels=dataset.train_labels[train],
      test_images=dataset.train_images[val],
      test_labels=dataset.train_labels[val])
  return inner, dataset.test_images, dataset.test_labels


@dataclasses.dataclass(frozen=True)
class TrialResult:
  candidate: dict
  noise_multiplier: float
  steps: int
  score: float  # Noisy validation accuracy: the released score.
  test_accuracy: float  # Of this trial's model (reported, never used).
  params: object = dataclasses.field(repr=False, default=None)


class TrialRunner:
  """Trains candidates on the trials' split and scores them privately.

  The step is compiled once per padded batch shape and reused by every
  trial: C, σ·C, the expected batch size and the learning rate are its
  arguments, not constants (otherwise each trial would spend far longer
  compiling than training). What they are comes from each trial's own
  `build_mechanism`: its sampler draws the batches, its C and σ·C are
  passed in, its expected batch size divides the noisy sum.
  """

  def __init__(self, config, dataset: Dataset, validation_fraction: float,
               validation_noise: float):
    if config.optimizer.name not in _OPTIMIZERS:
      raise ConfigError('optimizer.name',
                        f'tuning supports {", ".join(_OPTIMIZERS)}, got '
                        f'{config.optimizer.name!r}',
                        'use optimizer.name=sgd or adam for tuning')
    self.config = config
    self.dataset, self.test_images, self.test_labels = split_validation(
        dataset, validation_fraction)
    self.validation_noise = validation_noise
    model = models.build_model(config.model, dataset.num_classes)
    self.task = image_task.from_dataset(config, self.dataset, model)
    self.eval_step = steps_lib.make_eval_step(model.apply)
    self.placement = sharding.Placement(sharding.make_mesh(1))
    self.optimizer = _OPTIMIZERS[config.optimizer.name](config.optimizer)
    self._step = jax.jit(self._train_step, donate_argnums=(0, 1))

  @property
  def num_train(self) -> int:
    return self.dataset.num_train

  def _train_step(self, params, opt_state, batch, noise_key, step, clip_norm,
                  noise_std, expected_batch_size):
    # The mechanism's clipped sum (its method; C passed in), then the noise
    # of noise.add_noise_and_normalize: N(0, (σC)²) from fold_in(key, step),
    # divided by the expected batch size; then the optimizer.
    grad_sum, _ = clipped_grad_sum(
        self.task.batch_loss, clip_norm, self.config.perf.clipping,
        self.config.perf.microbatch_size)(params, batch['inputs'],
                                          batch['mask'])
    drawn = noise.gaussian_like(grad_sum, jax.random.fold_in(noise_key, step),
                                noise_std)
    mean = jax.tree_util.tree_map(lambda s, z: (s + z) / expected_batch_size,
                                  grad_sum, drawn)
    updates, opt_state = self.optimizer.update(mean, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  def _config(self, candidate: dict, sigma: float, seed: int):
    config = self.config.copy_and_resolve_references()
    config.seed = seed
    config.dp.batch_size = candidate['batch_size']
    config.dp.clip_norm = candidate['clip_norm']
    config.dp.noise_multiplier = sigma
    config.dp.target_epsilon = None  # Planned by tuning.privacy instead.
    config.optimizer.learning_rate = candidate['learning_rate']
    config.train.num_epochs = candidate['epochs']
    config.train.num_steps = None
    return config

  def run(self, candidate: dict, sigma: float, seed: int) -> TrialResult:
    """Trains `candidate` with noise multiplier `sigma`; scores it."""
    config = self._config(candidate, sigma, seed)
    mechanism = build_mechanism(config.dp, config.perf, self.num_train, None,
                                config.train.num_epochs, seed)
    if mechanism.adaptive is not None or not mechanism.schedule.is_constant:
      raise ConfigError('dp.noise_schedule', 'tuning trials use a constant σ '
                        'and fixed clipping', 'tune with the defaults')
    params, _ = self.task.init(jax.random.fold_in(jax.random.key(seed),
                                                  INIT_STREAM))
    opt_state = self.optimizer.init(params)
    opt_state.hyperparams['learning_rate'] = jnp.asarray(
        candidate['learning_rate'], jnp.float32)
    key = noise_key(seed)
    scalars = [jnp.asarray(x, jnp.float32) for x in (
        mechanism.clip_norm, mechanism.noise_std,
        mechanism.expected_batch_size)]
    for t in range(mechanism.num_steps):
      batch = _batch_arrays(self.task, mechanism.sampler.sample(t),
                            self.placement, t)
      params, opt_state = self._step(params, opt_state, batch, key,
                                     jnp.asarray(t, jnp.int32), *scalars)
    _, val_accuracy = self.task.evaluate(params, self.placement)
    n_val = self.dataset.test_labels.shape[0]
    correct = round(val_accuracy * n_val)
    rng = np.random.default_rng([seed, VALIDATION_STREAM])
    score = (correct + self.validation_noise * rng.standard_normal()) / n_val
    _, test_accuracy = steps_lib.evaluate(
        self.eval_step, params, self.test_images, self.test_labels,
        min(config.eval.batch_size, len(self.test_labels)), self.placement)
    return TrialResult(candidate=candidate, noise_multiplier=sigma,
                       steps=mechanism.num_steps, score=float(score),
                       test_accuracy=float(test_accuracy), params=params)


# optimizer.name -> optax optimizer with an injectable learning rate.
_OPTIMIZERS = {
    'sgd': lambda opt: optax.inject_hyperparams(optax.sgd)(
        learning_rate=opt.learning_rate, momentum=opt.momentum or None,
        nesterov=opt.nesterov),
    'adam': lambda opt: optax.inject_hyperparams(optax.adam)(
        learning_rate=opt.learning_rate, b1=opt.b1, b2=opt.b2, eps=opt.eps),
}

"""Trains the audited model many times with one compiled step.

An audit needs many training runs that differ only in which canaries are
present and in the seed (one for a one-run audit, hundreds for the others).
`AuditTrainer` builds the real pieces once — the mechanism's sampler and
clipped sum, its optax noise transformation, the configured optimizer, the
jitted `steps.make_train_step` — and reruns them per (presence, seed); only
host-side draws and the noise key change, so nothing recompiles.

It is a lean loop without checkpoints, budget or ledger: those do not change
what one step releases, which is what an audit tests. Every run executes
exactly `mechanism.num_steps` steps, the steps the claimed ε accounts for.

White-box observation: an identity link after the noise in the optax chain
keeps the privatised gradient of the canary probe, so the auditor sees each
step's released gradient on the canary coordinates, as DP-SGD's threat model
allows.
"""

import dataclasses
import math
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdp import streams
from jaxdp import models
from jaxdp import noise
from jaxdp import optimizers
from jaxdp import sampling
from jaxdp import sharding
from jaxdp.train import step as steps
from jaxdp.audit import canaries as canaries_lib
from jaxdp.data.dataset import Dataset
from jaxdp.errors import ConfigError
from jaxdp.mechanism import DpMechanism
from jaxdp.train.state import TrainState


class _Seen(NamedTuple):
  probe: jax.Array  # [m]: the last privatised gradient on the probe.


def _observe_probe() -> optax.GradientTransformation:
  """Passes updates through, keeping their canary-probe column."""
  select = lambda tree: tree['canary_probe']['kernel'][:, 0]
  init = lambda params: _Seen(jnp.zeros_like(select(params)))
  update = lambda updates, state, params=None: (updates,
                                                _Seen(select(updates)))
  return optax.GradientTransformation(init, update)


@dataclasses.dataclass(frozen=True)
class Observation:
  """What the auditor sees of one run."""

  presence: np.ndarray  # bool [m]
  # [steps, m]: privatised gradient on each canary's probe coordinate, in
  # units of one clipped canary gradient (× B / C); None for input canaries.
  probe_gradients: Optional[np.ndarray]
  canary_log_probs: np.ndarray  # [m, classes] of the final model.
  # [m]: each canary's cyclic group (it may take part in steps ≡ it mod b;
  # the auditor knows the sampler's seed); zeros for samplers without one.
  canary_groups: np.ndarray
  test_accuracy: Optional[float]  # On held-out images that are not canaries.


class AuditTrainer:
  """Compiles the training step once; `run(presence, seed)` trains afresh.

  With a `placement` over several devices the step is the data-parallel one
  of `jaxdp.sharding` (clipped sums added across devices, noise once), so an
  audit covers it too. Audits run in one process (the observations are read
  back on the host).
  """

  def __init__(self, config, dataset: Dataset,
               canaries: canaries_lib.Canaries, mechanism: DpMechanism,
               placement: Optional[sharding.Placement] = None):
    self.config = config
    if jax.process_count() > 1:
      raise ConfigError('perf.num_devices', 'audits run in one process, not '
                        f'{jax.process_count()}', 'run experiments.audit on '
                        'one host (its devices can still be used)')
    self.placement = placement or sharding.Placement(sharding.make_mesh(1))
    self.canaries = canaries
    self.mechanism = mechanism
    self.num_real = dataset.num_train
    m = canaries.count
    if mechanism.sampler.num_examples != self.num_real + m:
      raise ValueError('the mechanism must sample from the real examples '
                       'and every canary, present or not')
    module = canaries_lib.Probed(models.build_model(config.model,
                                                    dataset.num_classes))
    self.module = module
    self.images = np.concatenate([dataset.train_images, canaries.images])
    self.labels = np.concatenate([dataset.train_labels, canaries.labels])
    sample = (jnp.asarray(self.images[:1]), jnp.zeros((1, m), jnp.float32))
    models.check_no_example_mixing(module.model, sample[0])
    init_key = streams.init_key(config.seed)
    self.initial_params = module.init(init_key, *sample)['params']
    # A finite scale even for a non-private baseline (C = ∞).
    clip = mechanism.clip_norm if math.isfinite(mechanism.clip_norm) else 1.0
    self.unit = clip / mechanism.expected_batch_size
    loss = canaries_lib.probed_loss(module, clip)
    self.tx = optax.chain(
        mechanism.noise_transform(0), _observe_probe(),
        optimizers.build_optimizer(config.optimizer, mechanism.num_steps))
    self.step = steps.make_train_step(
        loss, mechanism, self.tx, self.placement,
        self._initial_state(streams.noise_key(0)))
    self.predict = jax.jit(
        lambda p, x: jax.nn.log_softmax(module.apply(
            {'params': p}, x, jnp.zeros((x.shape[0], m), jnp.float32))[0]))

  def _initial_state(self, key: jax.Array) -> TrainState:
    params = jax.tree_util.tree_map(jnp.copy, self.initial_params)
    return self.placement.put_state(TrainState(
        step=jnp.zeros([], jnp.int32), params=params,
        opt_state=noise.with_noise_key(self.tx.init(params), key)))

  def _sampler(self, seed: int):
    """The run's sampler: the mechanism's, drawing from its own seed."""
    return sampling.reseeded(self.mechanism.sampler, seed)

  def _inputs(self, indices: np.ndarray, keep: np.ndarray):
    m = self.canaries.count
    canary = keep & (indices >= self.num_real)
    ids = np.zeros((len(indices), m), np.float32)
    if self.canaries.white_box:
      rows = np.flatnonzero(canary)
      ids[rows, indices[rows] - self.num_real] = 1.0
    images = self.images[indices]
    labels = self.labels[indices]
    images[~keep] = 0.0
    labels[~keep] = 0
    gradient_canary = canary & self.canaries.white_box
    return (images, labels, ids, gradient_canary)

  def run(self, presence: np.ndarray, seed: int) -> Observation:
    """Trains once with the canaries where `presence` is True."""
    present = np.r_[np.ones(self.num_real, bool), presence]
    sampler = self._sampler(seed)
    state = self._initial_state(streams.noise_key(seed))
    seen = []
    for t in range(self.mechanism.num_steps):
      batch = sampler.sample(t)
      keep = batch.mask & present[batch.indices]

      def gather(positions, indices=batch.indices, keep=keep):
        return {'inputs': self._inputs(indices[positions], keep[positions]),
                'mask': keep[positions]}
      state, _ = self.step(state, self.placement.put_batch(gather, len(keep)))
      if self.canaries.white_box:
        seen.append(np.asarray(state.opt_state[1].probe))
    params = state.params
    log_probs = np.asarray(self.predict(params, self.canaries.images))
    accuracy = None
    if len(self.canaries.test_labels):
      test = np.asarray(self.predict(params, self.canaries.test_images))
      accuracy = float(np.mean(test.argmax(-1) == self.canaries.test_labels))
    groups = (sampler.assignment()[self.num_real:]
              if hasattr(sampler, 'assignment')
              else np.zeros(self.canaries.count, int))
    return Observation(
        presence=presence, canary_groups=groups,
        probe_gradients=np.stack(seen) / self.unit if seen else None,
        canary_log_probs=log_probs, test_accuracy=accuracy)

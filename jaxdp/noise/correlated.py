"""Noise correlated across steps: the matrix-factorisation links (DP-MF).

Step t releases (S_t + w_t) / B, where S_t is the clipped sum, B the expected
batch size and w = C⁻¹z the noise of a strategy C (`strategies`), streamed:

  banded_mf  w_t = z_t − Σ_{j=1}^{b−1} c_j w_(t−j)    b − 1 buffers
  blt        w_t = z_t − Σ_i ω_i u_i,  u_i ← θ_i u_i + w_t   d buffers

z_t ~ N(0, (σ·C_clip·sens)² I) is drawn from fold_in(key, t) exactly as the
Gaussian link draws (`gaussian_like`), t the link's own counter, so banded_mf
with one band is DP-SGD bit for bit. The buffers are parameter-shaped arrays
of the optax state: they are checkpointed and sharded like the parameters,
and a resumed run continues the same noise. They depend on the keys alone,
never on the data, so after a rollback the state is carried forward to the
executed step by replaying the recursion (`advanced`): no z is drawn twice
for two different gradients, and the buffers are those of the timeline the
accountant counts.

Accounting. Examples are split into b fixed groups and step t samples group
t mod b (`sampling.CyclicPoissonSampler`), so participations are ≥ b steps
apart.

  banded_mf  columns b apart do not overlap: each participation is its own
             Gaussian release of multiplier σ (z's std is σ·C·‖c‖, one
             participation's sensitivity C·‖c‖), Poisson-sampled with q' =
             B·b/N; m steps compose ⌈m/b⌉ of them (amplified banded MF,
             Choquette-Choo et al. 2023, Thm. 4). One cyclic piece.
  blt        no amplification is claimed. z's std is σ·C·sens_n with sens_n
             the sensitivity of all n planned steps under ≥ b separation,
             so the planned run is one Gaussian release of multiplier σ,
             charged on its first step. Steps past the plan (a run extended
             after rollbacks) each add at most Δ (`pattern_increment_bound`)
             to sens² per participation: a cyclic piece of multiplier
             σ·sens_n/√Δ.
"""

import dataclasses
import math
from typing import NamedTuple

import dp_accounting
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdp import sampling
from jaxdp.accounting.cyclic import CyclicDpEvent
from jaxdp.errors import ConfigError
from jaxdp.noise import schedules
from jaxdp.noise import strategies
from jaxdp.noise.gaussian import ConstantClipLink
from jaxdp.noise.gaussian import gaussian_like
from jaxdp.noise.gaussian import round_up_f32
from jaxdp.noise.gaussian import std_for_float32_clip


class BandedNoiseState(NamedTuple):
  step: jax.Array  # int32: logical steps privatised so far.
  key: jax.Array  # The z of step t is drawn from fold_in(key, t).
  std: jax.Array  # float32: σ·C_clip·sens, z's std.
  coefficients: jax.Array  # float32 [b − 1]: c_1 .. c_(b−1) ([0]: b = 1).
  recent: tuple  # The last b − 1 noise trees w, newest first.


class BltNoiseState(NamedTuple):
  step: jax.Array
  key: jax.Array
  std: jax.Array
  omega: jax.Array  # float32 [d]
  theta: jax.Array  # float32 [d]
  buffers: tuple  # d trees u_i.


def draw(state, template):
  """z of the state's step, shaped like `template`."""
  return gaussian_like(template, jax.random.fold_in(state.key, state.step),
                       state.std)


def _banded_next(state: BandedNoiseState, template):
  """(w_t, the state after step t)."""
  z = draw(state, template)
  if not state.recent:  # One band: DP-SGD's independent noise.
    return z, state._replace(step=state.step + 1)
  def combine(z_leaf, *recent):
    correction = sum(state.coefficients[j].astype(z_leaf.dtype) * r
                     for j, r in enumerate(recent))
    return z_leaf - correction
  w = jax.tree_util.tree_map(combine, z, *state.recent)
  return w, state._replace(step=state.step + 1,
                           recent=(w, *state.recent[:-1]))


def _blt_next(state: BltNoiseState, template):
  z = draw(state, template)
  def combine(z_leaf, *buffers):
    return z_leaf - sum(state.omega[i].astype(z_leaf.dtype) * u
                        for i, u in enumerate(buffers))
  w = jax.tree_util.tree_map(combine, z, *state.buffers)
  buffers = tuple(
      jax.tree_util.tree_map(
          lambda u, w_leaf, i=i: state.theta[i].astype(u.dtype) * u + w_leaf,
          u_tree, w)
      for i, u_tree in enumerate(state.buffers))
  return w, state._replace(step=state.step + 1, buffers=buffers)


def _next(state, template):
  if isinstance(state, BltNoiseState):
    return _blt_next(state, template)
  return _banded_next(state, template)


def _buffers(state) -> tuple:
  return state.buffers if isinstance(state, BltNoiseState) else state.recent


@jax.jit
def _replay(state, count):
  template = _buffers(state)[0]
  return jax.lax.fori_loop(0, count, lambda _, s: _next(s, template)[1],
                           state)


def advanced(state, step):
  """`state` after the recursion of steps state.step .. step − 1 (their z
  were spent by executions a rollback undid). Never goes back."""
  count = int(step) - int(state.step)
  if count < 0:
    raise ValueError(f'the noise state is at step {int(state.step)}; moving '
                     f'it back to {int(step)} would draw its noise again')
  if count == 0:
    return state
  if not _buffers(state):  # Nothing but the counter to carry forward.
    return state._replace(step=jnp.asarray(step, jnp.int32))
  return _replay(state, jnp.asarray(count, jnp.int32))


def correlated_transform(strategy: strategies.Strategy, noise_std: float,
                         expected_batch_size: float, key: jax.Array):
  """The optax link: clipped sum S_t -> (S_t + (C⁻¹z)_t) / B."""
  std = float(round_up_f32(noise_std))
  blt = strategy.kind == 'blt'
  if blt:
    weights = np.asarray(strategy.omega, np.float32)
    decay = np.asarray(strategy.theta, np.float32)
  else:
    weights = np.asarray(strategy.coefficients[1:], np.float32)
  buffers = len(weights)
  if not buffers:  # One band. A checkpoint cannot hold an empty array.
    weights = np.zeros(1, np.float32)

  def init_fn(params):
    zeros = lambda: jax.tree_util.tree_map(jnp.zeros_like, params)
    common = dict(step=jnp.zeros([], jnp.int32), key=jnp.copy(key),
                  std=jnp.asarray(std, jnp.float32))
    if blt:
      return BltNoiseState(**common, omega=jnp.asarray(weights),
                           theta=jnp.asarray(decay),
                           buffers=tuple(zeros() for _ in weights))
    return BandedNoiseState(**common, coefficients=jnp.asarray(weights),
                            recent=tuple(zeros() for _ in range(buffers)))

  def update_fn(clipped_sum, state, params=None):
    del params
    w, state = _next(state, clipped_sum)
    mean = jax.tree_util.tree_map(lambda s, z: (s + z) / expected_batch_size,
                                  clipped_sum, w)
    return mean, state

  return optax.GradientTransformation(init_fn, update_fn)


def _check_fields(dp, name: str) -> None:
  if dp.adaptive_clip_quantile != 0:
    raise ConfigError('dp.adaptive_clip_quantile',
                      f'adaptive clipping is not available with {name} noise',
                      'set dp.adaptive_clip_quantile=0, or '
                      'dp.noise_mechanism=gaussian')
  if dp.noise_schedule != 'constant':
    raise ConfigError('dp.noise_schedule',
                      f'a σ schedule is not available with {name} noise',
                      'set dp.noise_schedule=constant')
  if not (isinstance(dp.mf_bands, int) and dp.mf_bands >= 1):
    raise ConfigError('dp.mf_bands', f'must be an integer >= 1, got '
                      f'{dp.mf_bands!r}', 'set dp.mf_bands=1 (DP-SGD) or '
                      'more, at most N / dp.batch_size')


@dataclasses.dataclass(frozen=True)
class _MatrixFactorizationLink(ConstantClipLink):
  """What banded_mf and blt share; `strategy` differs."""

  bands: int  # b: cyclic groups, minimum separation (and banded's bands).
  num_steps: int  # n: the horizon the strategy is optimised for.
  buffers: int = 0  # BLT's d.
  SAMPLER = 'cyclic_poisson'

  def strategy(self) -> strategies.Strategy:
    """C for the planned steps (cached by `strategies`)."""
    raise NotImplementedError

  @classmethod
  def make_sampler(cls, dp, num_examples: int, batch_size: float, seed: int,
                   multiple_of: int = 1, overflow_probability: float = 1e-3):
    """Cyclic Poisson sampling over dp.mf_bands groups: the sampler this
    link's accounting assumes."""
    _check_fields(dp, cls.name)
    if dp.sampler != 'poisson':
      raise ConfigError(
          'dp.sampler', f'{cls.name} noise is accounted under cyclic Poisson '
          f'sampling, not {dp.sampler!r}', 'set dp.sampler=poisson (the link '
          'then samples group t mod dp.mf_bands at step t)')
    sampling.check_inputs(num_examples, batch_size, seed)
    return sampling.CyclicPoissonSampler(
        num_examples, batch_size, dp.mf_bands, seed, multiple_of,
        overflow_probability)

  def check(self, mechanism) -> None:
    if not mechanism.is_private:
      raise ConfigError('dp.noise_mechanism', f'{self.name} noise needs a '
                        'private run (σ > 0, finite C)',
                        'use dp.noise_mechanism=gaussian for a baseline')
    groups = getattr(mechanism.sampler, 'groups', None)
    if (not isinstance(mechanism.sampler, sampling.CyclicPoissonSampler)
        or groups != self.bands):
      raise ConfigError(
          'dp.mf_bands', f'{self.name} noise is accounted for participations '
          f'{self.bands} steps apart, but the sampler is '
          f'{mechanism.sampler.name} with {groups} groups',
          'build the mechanism with build_mechanism, whose sampler is the '
          "link's cyclic Poisson sampler over dp.mf_bands groups")

  def column_sensitivity(self, mechanism) -> float:
    """The factor C·x's sensitivity adds to the clipped sum's (C or 2C)."""
    del mechanism  # The strategy is the link's, for the planned steps.
    return self.strategy().sensitivity

  def noise_std(self, mechanism) -> float:
    """z's std: σ·C·sens (C as the float32 clipping runs it)."""
    return std_for_float32_clip(mechanism.noise_std, mechanism.clip_norm) * (
        self.column_sensitivity(mechanism))

  def releases(self, mechanism) -> list:
    return [('clipped_sum', self.noise_std(mechanism),
             mechanism.sensitivity * self.column_sensitivity(mechanism))]

  def transform(self, mechanism, key: jax.Array):
    return correlated_transform(self.strategy(),
                                self.noise_std(mechanism),
                                mechanism.expected_batch_size, key)

  def settings(self) -> dict:
    # Another horizon is another C, which the checkpointed buffers and the
    # accounted sensitivity do not continue.
    return {'noise_mechanism': self.name, 'mf_bands': self.bands,
            'mf_steps': self.num_steps}

  def strategy_summary(self) -> dict:
    """The strategy's figures (results.json, the calculator)."""
    strategy = self.strategy()
    return {'kind': self.name, 'bands': self.bands,
            'buffers': strategy.buffers, 'steps': strategy.num_steps,
            'sensitivity': strategy.sensitivity,
            'max_column_norm': strategy.max_column_norm,
            # Of the noise on the running sums, in units of σ·C.
            'rmse': strategy.rmse,
            'identity_rmse': strategies.identity_rmse(strategy.num_steps),
            'coefficients': strategy.to_json()}

  def summary(self) -> dict:
    return {'noise_schedule': schedules.NoiseSchedule().to_json(),
            'adaptive_clipping': None,
            'correlated_noise': self.strategy_summary()}


@dataclasses.dataclass(frozen=True)
class BandedMfLink(_MatrixFactorizationLink):
  """Banded matrix factorisation (`dp.noise_mechanism='banded_mf'`):
  dp.mf_bands bands, amplified by cyclic Poisson sampling."""

  name = 'banded_mf'
  state_type = BandedNoiseState
  FIELDS = {'noise_mechanism': 'dp.noise_mechanism',
            'mf_bands': 'dp.mf_bands', 'mf_steps': 'train.num_steps'}

  @classmethod
  def from_config(cls, dp, expected_batch_size: float,
                  num_steps: int) -> 'BandedMfLink':
    del expected_batch_size
    _check_fields(dp, cls.name)
    return cls(bands=int(dp.mf_bands), num_steps=int(num_steps))

  def strategy(self) -> strategies.Strategy:
    return strategies.banded(self.num_steps, self.bands)

  def pieces(self, mechanism) -> list:
    sigma = mechanism.noise_multiplier if mechanism.is_private else 0.0
    one = mechanism.sampler.step_event(dp_accounting.GaussianDpEvent(sigma))
    return [(mechanism.num_steps, CyclicDpEvent(one, self.bands))]


@dataclasses.dataclass(frozen=True)
class BltLink(_MatrixFactorizationLink):
  """Buffered linear Toeplitz noise (`dp.noise_mechanism='blt'`):
  dp.mf_buffers buffers, participations dp.mf_bands steps apart."""

  name = 'blt'
  state_type = BltNoiseState
  FIELDS = {'noise_mechanism': 'dp.noise_mechanism',
            'mf_bands': 'dp.mf_bands', 'mf_buffers': 'dp.mf_buffers',
            'mf_steps': 'train.num_steps'}

  @classmethod
  def from_config(cls, dp, expected_batch_size: float,
                  num_steps: int) -> 'BltLink':
    del expected_batch_size
    _check_fields(dp, cls.name)
    if not (isinstance(dp.mf_buffers, int) and dp.mf_buffers >= 1):
      raise ConfigError('dp.mf_buffers', f'must be an integer >= 1, got '
                        f'{dp.mf_buffers!r}', 'set a few buffers, e.g. '
                        'dp.mf_buffers=4')
    return cls(bands=int(dp.mf_bands), num_steps=int(num_steps),
               buffers=int(dp.mf_buffers))

  def strategy(self) -> strategies.Strategy:
    return strategies.blt(self.num_steps, self.bands, self.buffers)

  def pieces(self, mechanism) -> list:
    sigma = mechanism.noise_multiplier if mechanism.is_private else 0.0
    strategy = self.strategy()
    # Past the plan: one more participation adds ≤ Δ to sens², and z's std
    # stays σ·C·sens_n.
    extra = (sigma * strategy.sensitivity /
             math.sqrt(strategies.pattern_increment_bound(strategy)))
    planned = [(1, dp_accounting.GaussianDpEvent(sigma))]
    if mechanism.num_steps > 1:
      planned.append((mechanism.num_steps - 1, dp_accounting.NoOpDpEvent()))
    return planned + [(1, CyclicDpEvent(dp_accounting.GaussianDpEvent(extra),
                                        self.bands))]

  def settings(self) -> dict:
    return {**super().settings(), 'mf_buffers': self.buffers}


# The links whose noise is correlated across steps (what audits break).
CORRELATED_LINKS = (BandedMfLink, BltLink)

"""Noise for the clipped sum: the links of the optax chain that privatise it.

  gaussian   N(0, σ²C²) once per step on the clipped sum, then ÷ B_expected
  adaptive   the same step with a quantile-tracking C (Andrew et al. 2021)
  schedules  σ_t = σ · f(t), piecewise constant
  correlated banded_mf and blt: noise C⁻¹z correlated across steps (DP-MF)
  strategies the matrices C of those links, optimised on the host

A noise link is what `DpMechanism` holds to privatise the clipped sum. It
decides, together, what the accountant is told (`pieces`) and what the step
draws (`transform`), so they cannot disagree. The protocol (`NoiseLink`)
also admits noise correlated across steps: a link's state may hold buffers
besides its counter and key, and its `pieces` need not be one event per
step. A new link is one module implementing `NoiseLink` plus one line in
`LINKS`; the trainer and the step do not change.
"""

from typing import Any, ClassVar, Protocol

import jax
import jax.numpy as jnp

from jaxdp.errors import ConfigError
from jaxdp.noise import adaptive
from jaxdp.noise import correlated
from jaxdp.noise import gaussian
from jaxdp.noise.adaptive import AdaptiveNoiseState
from jaxdp.noise.gaussian import NoiseState
from jaxdp.noise.gaussian import add_noise_and_normalize
from jaxdp.noise.gaussian import gaussian_like
from jaxdp.noise.gaussian import noisy_mean
from jaxdp.noise.gaussian import round_up_f32
from jaxdp.noise.gaussian import value_at


class NoiseLink(Protocol):
  """The first link of the optax chain, and what it tells the accountant."""

  name: ClassVar[str]
  # Its optax state: a NamedTuple with at least `step` (int32: logical steps
  # privatised so far; never rolled back) and `key` (the noise stream).
  state_type: ClassVar[type]
  # The config field behind each key of `settings()`.
  FIELDS: ClassVar[dict]

  @classmethod
  def from_config(cls, dp, expected_batch_size: float,
                  num_steps: int) -> 'NoiseLink':
    """The link of `config.dp` for a run of `num_steps` planned steps
    (ConfigError naming a bad field)."""

  def check(self, mechanism) -> None:
    """ConfigError if the link cannot run with this mechanism's σ."""

  def pieces(self, mechanism) -> list:
    """[(count, DpEvent)] of the planned steps, composed in order.

    ε after k steps is that of the first k steps' events (the ledger keeps
    one segment per piece), so each prefix of pieces must bound what the
    first k steps released. A link whose noise is correlated across steps
    can meet this with events that are not one per step: for example a
    whole band's event on the band's first step and `NoOpDpEvent` on the
    others.
    """

  def releases(self, mechanism) -> list:
    """[(what, noise std, L2 sensitivity)] of the Gaussian releases of the
    first step: together they must make the first piece's DpEvent, i.e.
    (Σ (sensitivity / std)²)^(-1/2) is its noise multiplier. The
    conformance test checks this, and the std drawn, for every link."""

  def transform(self, mechanism, key: jax.Array) -> Any:
    """The optax transformation: clipped sum (+ step inputs) -> noisy mean."""

  def clip_norm(self, opt_state) -> Any:
    """The C the link owns (traced), or None for the mechanism's constant."""

  def step_inputs(self, mask: jax.Array, stats) -> dict:
    """Keyword inputs of the link's update, from the batch's mask and
    ClippingStats (e.g. an unclipped count); {} for none."""

  def settings(self) -> dict:
    """Privacy settings (JSON values) a resume may not change."""

  def summary(self) -> dict:
    """Entries for the run's summary (results.json)."""

  # Optional: `make_sampler(dp, num_examples, batch_size, seed, *,
  # multiple_of, overflow_probability)`, for a link whose accounting assumes
  # a sampler of its own (`SAMPLER` names it); `sampling.make_sampler(
  # dp.sampler, ...)` otherwise.


# dp.noise_mechanism -> the link's class.
LINKS = {
    'gaussian': gaussian.GaussianLink,
    'adaptive': adaptive.AdaptiveLink,
    'banded_mf': correlated.BandedMfLink,
    'blt': correlated.BltLink,
}

# Every link's state type: what a rollback and an audit reach into.
_STATES = tuple(link.state_type for link in LINKS.values())
_CORRELATED = (correlated.BandedNoiseState, correlated.BltNoiseState)


def sampler_name(dp) -> str:
  """The sampler a run of `dp` uses: its link's own, or dp.sampler."""
  return getattr(link_class(dp), 'SAMPLER', dp.sampler)


def link_class(dp) -> type:
  """The link class `dp.noise_mechanism` names. A positive
  `dp.adaptive_clip_quantile` means the adaptive link, as it always has."""
  name = dp.noise_mechanism
  if name not in LINKS:
    raise ConfigError('dp.noise_mechanism', f'unknown mechanism {name!r}',
                      f'use one of {", ".join(LINKS)}')
  if name == 'gaussian' and dp.adaptive_clip_quantile != 0:
    name = 'adaptive'
  return LINKS[name]


def with_noise_step(opt_state, step):
  """`opt_state` with every noise link's counter set to `step`.

  After a rollback the parameters and optimizer state go back to a checkpoint,
  but the noise counter must not: the steps undone were executed, and drawing
  their noise again for different parameters would release the difference of
  two gradients without noise. A correlated link's buffers are carried
  forward with it, by replaying their (data-independent) recursion.
  """
  def moved(s):
    if isinstance(s, _CORRELATED):  # Buffers follow the executed steps.
      return correlated.advanced(s, step)
    return s._replace(step=jnp.asarray(step, jnp.int32))
  return jax.tree_util.tree_map(lambda s: moved(s) if _is_state(s) else s,
                                opt_state, is_leaf=_is_state)


def with_noise_key(opt_state, key: jax.Array):
  """`opt_state` with every noise link's key set to `key` (a new noise
  stream for the same compiled step, e.g. another seed of an audit)."""
  return _replace_in_noise_states(opt_state, key=key)


def _is_state(s) -> bool:
  return isinstance(s, _STATES)


def _replace_in_noise_states(opt_state, **fields):
  return jax.tree_util.tree_map(
      lambda s: s._replace(**fields) if _is_state(s) else s,
      opt_state, is_leaf=_is_state)


def noise_steps(opt_state) -> list:
  """The counters of the noise links' states in `opt_state` (host ints)."""
  found = []
  jax.tree_util.tree_map(
      lambda s: found.append(int(s.step)) if _is_state(s) else s,
      opt_state, is_leaf=_is_state)
  return found

"""The pieces every clipped sum is made of, and what a clip rule must do.

For a batch of examples x_1..x_n with mask m_i (False for padding) and clip norm
C, the clipped sum is

    S = Σ_i m_i · finite_i · g_i · min(1, C / ‖g_i‖₂),

where g_i is the gradient of example i's loss with respect to the whole
parameter pytree, ‖·‖₂ is taken over all parameters together, and finite_i is 0
when g_i holds a NaN or ±inf (such an example is dropped: zeroing it depends only
on that example, so the bound below still holds). Every term has norm ≤ C, so
adding or removing one example moves S by at most C (add/remove-one
sensitivity); replacing one moves it by at most 2C (replace-one).

Losses are given batched: `batch_loss(params, batch) -> [n]`, where example i's
loss depends on slice i of `batch` alone (models that mix examples, such as
BatchNorm, are refused elsewhere). Two ways compute S from it:

* `vmap` (`jaxdp.clipping.vmap`): per-example gradients from `jax.vmap` over
  `jax.value_and_grad`. Exact for any model; memory and time grow with
  batch × parameters.
* `fast` / `ghost` (`jaxdp.clipping.fast`): norms from activations and output
  gradients of known layers, without per-example gradients (`vmap` for the
  rest); the clipped sum from the same (`fast`) or from a second backward
  pass weighted by the clip factors (`ghost`).

Either can run in microbatches with `lax.scan`: that trades speed for memory and
leaves S unchanged up to floating-point summation order.
"""

import math
from typing import Any, Callable, NamedTuple, Optional, Protocol, Sequence

import dp_accounting
import jax
import jax.numpy as jnp

PyTree = Any
# batch_loss(params, batch) -> [n] per-example losses.
BatchLoss = Callable[[PyTree, PyTree], jax.Array]
# chunk(params, batch, mask) -> (clipped sum, ClippingStats).
ClippedChunk = Callable[[PyTree, PyTree, jax.Array], tuple]


class ClippingStats(NamedTuple):
  """Per-example diagnostics (computed on private data: not privatised)."""

  norms: jax.Array  # [n] gradient norm before clipping; 0 for padding.
  losses: jax.Array  # [n] loss of each example; 0 for padding.
  dropped: jax.Array  # [n] True where a real example's gradient was not finite.
  # [n] True where a real example was scaled down (by any of its groups'
  # bounds): the step counts unclipped examples from it, never from norms.
  clipped: jax.Array


def sensitivity(clip_norm: float,
                relation: dp_accounting.NeighboringRelation) -> float:
  """L2 sensitivity of the clipped sum under `relation`."""
  if relation == dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE:
    return float(clip_norm)
  if relation == dp_accounting.NeighboringRelation.REPLACE_ONE:
    return 2.0 * float(clip_norm)
  raise ValueError(f'unsupported neighbouring relation {relation}')


def squared_norms(per_example_grads: PyTree) -> jax.Array:
  """Squared L2 norm of each example's gradient over a pytree -> [n]."""
  leaves = jax.tree_util.tree_leaves(per_example_grads)
  return sum(jnp.sum(jnp.reshape(g, (g.shape[0], -1)).astype(jnp.float32) ** 2,
                     axis=1) for g in leaves)


def clip_factors(norms: jax.Array, mask: jax.Array,
                 clip_norm: float) -> tuple[jax.Array, jax.Array]:
  """Weights min(1, C/‖g_i‖) for real, finite examples; 0 otherwise.

  `clip_norm` may be a traced (finite) value, so one compiled step can serve
  several clip norms.
  """
  finite = jnp.isfinite(norms)
  keep = jnp.logical_and(mask, finite)
  if isinstance(clip_norm, (int, float)) and math.isinf(clip_norm):
    factor = jnp.ones_like(norms)
  else:  # C / max(‖g‖, C) = min(1, C / ‖g‖), and is finite for ‖g‖ = 0.
    factor = clip_norm / jnp.maximum(jnp.where(finite, norms, 0.0), clip_norm)
  return jnp.where(keep, factor, 0.0), jnp.logical_and(mask, ~finite)


def rows_where(keep: jax.Array, x: jax.Array) -> jax.Array:
  """x with the rows (leading axis) where `keep` is False set to exactly 0."""
  return jnp.where(jnp.reshape(keep, (-1,) + (1,) * (x.ndim - 1)), x, 0)


def weighted_sum(per_example_grads: PyTree, weights) -> PyTree:
  """Σ_i w_i g_i, with rows of zero weight contributing exactly zero.

  `weights`: one [n] array for every leaf, or a list of them, one per leaf
  in leaf order (a rule that weighs layers apart).
  """
  leaves, treedef = jax.tree_util.tree_flatten(per_example_grads)
  per_leaf = weights if isinstance(weights, list) else [weights] * len(leaves)

  def one_leaf(g, w):
    keep = w > 0
    w = jnp.reshape(w, (-1,) + (1,) * (g.ndim - 1)).astype(g.dtype)
    return jnp.sum(rows_where(keep, g) * w, axis=0)  # 0 · NaN is NaN.
  return jax.tree_util.tree_unflatten(
      treedef, [one_leaf(g, w) for g, w in zip(leaves, per_leaf)])


def expand(example: PyTree) -> PyTree:
  """One example -> a batch of one."""
  return jax.tree_util.tree_map(lambda x: x[None], example)


def microbatched(chunk: ClippedChunk, microbatch_size: Optional[int]):
  """Runs `chunk` over microbatches with `lax.scan`, summing the results."""
  def in_microbatches(params, batch, mask):
    n = mask.shape[0]
    if microbatch_size is None or microbatch_size >= n:
      return chunk(params, batch, mask)
    if n % microbatch_size:
      raise ValueError(
          f'batch of {n} is not a multiple of microbatch size {microbatch_size}')
    k = n // microbatch_size
    split = lambda x: jnp.reshape(x, (k, microbatch_size) + x.shape[1:])
    chunks = jax.tree_util.tree_map(split, (batch, mask))

    # Padding sits at the end of a batch (and of a device's share), so whole
    # microbatches of it are common under Poisson sampling: they are skipped.
    # Their result is exactly zero either way (masked slots get factor 0).
    shapes = jax.eval_shape(chunk, params, *jax.tree_util.tree_map(
        lambda x: x[0], chunks))
    nothing = lambda: jax.tree_util.tree_map(
        lambda s: jnp.zeros(s.shape, s.dtype), shapes)

    def body(total, batch_and_mask):
      part, stats = jax.lax.cond(batch_and_mask[1].any(),
                                 lambda: chunk(params, *batch_and_mask),
                                 nothing)
      return jax.tree_util.tree_map(jnp.add, total, part), stats

    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    total, stats = jax.lax.scan(body, zeros, chunks)
    merge = lambda x: jnp.reshape(x, (n,) + x.shape[2:])
    return total, jax.tree_util.tree_map(merge, stats)

  return in_microbatches


class Unit(NamedTuple):
  """Parameters whose per-example squared norms a method computed together:
  one leaf (vmap) or one layer's leaves (a fast-clipping site)."""

  layer: tuple  # The module path the parameters live under.
  size: int  # How many parameters.
  squared_norms: jax.Array  # [n]


class Clipped(NamedTuple):
  """What a clip rule decides for a batch of units."""

  factors: list  # [n] weights, one array per unit, in the units' order.
  norms: jax.Array  # [n] the whole gradient's norm before clipping.
  dropped: jax.Array  # [n] real examples with a non-finite gradient.
  clipped: jax.Array  # [n] real examples scaled down.


class ClipRule(Protocol):
  """How each example's gradient is bounded: a new rule is one module.

  A rule sees the per-example squared norms of the parameter units and
  returns each unit's weight per example. Whatever it does, every real
  example's weighted gradient must have L2 norm ≤ `clip_norm` (the ClippedSum's
  `l2_bound`), non-finite examples must get weight exactly 0, and padding
  (mask False) too: the accountant assumes nothing else.
  """

  name: str
  FIELDS: dict  # The config field behind each key of `settings()`.
  # True when every unit of an example gets the same weight, so that one
  # weighted backward pass forms the sum (perf.clipping='ghost').
  uniform: bool

  def clip(self, units: Sequence[Unit], mask: jax.Array,
           clip_norm) -> Clipped:
    """Weights for `units`; `clip_norm` may be traced (adaptive C)."""

  def settings(self) -> dict:
    """Privacy settings (JSON values) a resume may not change."""

  def summary(self) -> dict:
    """Entries for the run's summary (results.json)."""


def leaf_units(per_example_grads: PyTree) -> list[Unit]:
  """One Unit per leaf of a per-example gradient pytree, in leaf order."""
  flat, _ = jax.tree_util.tree_flatten_with_path(per_example_grads)
  return [Unit(layer=tuple(_key_name(k) for k in path[:-1]),
               size=int(math.prod(g.shape[1:])),
               squared_norms=jnp.sum(jnp.reshape(g, (g.shape[0], -1)).astype(
                   jnp.float32) ** 2, axis=1)) for path, g in flat]


def _key_name(key) -> str:
  for attr in ('key', 'name', 'idx'):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)

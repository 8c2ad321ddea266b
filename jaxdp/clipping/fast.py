"""Per-example clipping without per-example gradients, for known Flax layers.

For a Dense layer y = a W + b applied to example i (a_i: [T, d] inputs, T = 1
for a single vector, g_i = ∂ℓ_i/∂y_i: [T, p] output gradients), the
per-example gradient is ∇W_i = a_iᵀ g_i and ∇b_i = Σ_t g_it. Its norm needs no
∇W_i:

    ‖a_iᵀ g_i‖²_F = ‖a_i‖² ‖g_i‖²                       (T = 1)
                  = Σ_{t,s} (a_it·a_is)(g_it·g_is)       (T > 1, "ghost norm")

and the clipped sum is one matrix product, Σ_i c_i a_iᵀ g_i = aᵀ (c ∘ g)
("book-keeping", Bu et al. 2023): the activations and output gradients of
one ordinary forward and backward pass suffice. For T > 1 the Gram form costs
O(T²(d + p)) per example against O(T d p) for forming ∇W_i, so it is used when
2T² < d p, and ∇W_i is formed otherwise (the rule of Li et al. 2022); a
formed ∇W_i also gives the clipped sum directly, Σ_i c_i ∇W_i.

Known layers (the module's own parameters, called once per forward):

* Layers linear in their kernel, seen as a Dense layer on rows a_i [T, d]
  (`linear_views`): `nn.Dense` (inputs of any rank [n, ..., d]);
  `nn.DenseGeneral` (any contracted axes but the first, no batch_dims: the
  attention projections of `nn.MultiHeadDotProductAttention`); `nn.Einsum`
  whose equation is a Dense after transposes (e.g. 'btd,dhk->bthk'); `nn.Conv`
  (no feature groups, mask or input dilation; SAME, VALID or explicit
  padding) on its input's patches, T = output positions.
* `nn.Embed` (via `__call__` only): rows hit by the same token add up, so
  ‖∇E_i‖² = Σ_{t,s} [id_t = id_s] g_it·g_is; the sum scatters c ∘ g.
* `nn.LayerNorm`, `nn.RMSNorm`, `nn.GroupNorm` with features on the last axis:
  ∇scale_i = Σ_t x̂_it ∘ g_it and ∇bias_i = Σ_t g_it, with x̂ the layer's own
  normalised input (recomputed by the same module without scale and bias).

Every other parameter (grouped or masked convolutions, custom layers, a module
called twice, a tied embedding used through `attend`, layers inside lifted
transforms such as `nn.remat`) gets exact per-example gradients from
`jax.vmap`, only for those parameters. The result equals the `vmap` reference
up to floating-point rounding; tests check this layer by layer and model by
model.

How layers are found: `flax.linen.intercept_methods` sees every module call
while the loss runs. A first abstract pass (`jax.eval_shape`) lists the calls;
the real pass adds a zero "perturbation" to each known layer's output and
records its input, and the gradient with respect to the perturbations is the
output gradient g. Model code needs no change.

What this assumes: a known layer's parameters are used only through its own
call. Calls through other methods (`attend`), repeated calls and lifted
transforms are detected and sent to vmap; a model that reads another module's
parameters directly out of `self.variables` is not detected. With
'second_backward' the sum then has a term the norm did not see, so keep such
models on `perf.clipping='vmap'`.
"""

import dataclasses
from typing import Any, Optional

import flax.linen as nn
from flax import traverse_util
from flax.core import tracers
import jax
import jax.numpy as jnp

from jaxdp.clipping import linear_views
from jaxdp.clipping.global_norm import GlobalNorm
from jaxdp.clipping import per_example as clipping

PyTree = Any
_NORMS = (nn.LayerNorm, nn.RMSNorm, nn.GroupNorm)


@dataclasses.dataclass(frozen=True)
class Site:
  """A layer whose per-example gradients are computed without vmap."""

  path: tuple[str, ...]  # Module scope path = where its params live.
  kind: str  # 'linear' | 'embed' | 'norm'
  param_names: tuple[str, ...]  # Its parameter leaves, e.g. ('kernel', 'bias').
  out_shape: tuple[int, ...]
  out_dtype: Any
  normalizer: Optional[nn.Module] = None  # For norms: same layer, no affine.
  view: Optional[linear_views.LinearView] = None  # For linear layers.


def _kind(module: nn.Module) -> Optional[str]:
  if type(module) in linear_views.LINEAR_TYPES:
    return 'linear'
  if type(module) is nn.Embed:  # pylint: disable=unidiomatic-typecheck
    return 'embed'
  if type(module) in _NORMS and getattr(module, 'feature_axes', -1) in (
      -1, (-1,)):
    return 'norm'
  return None


def _normalizer(module: nn.Module) -> nn.Module:
  overrides = {'use_scale': False}
  if hasattr(module, 'use_bias'):
    overrides['use_bias'] = False
  return module.clone(parent=None, **overrides)


def _subtree(params, path):
  for name in path:
    if not hasattr(params, 'keys') or name not in params:
      return None
    params = params[name]
  return params if hasattr(params, 'keys') else None


def _params_fit(kind, leaves, in_shape, out_shape, in_dtype) -> bool:
  """Whether an embed or norm call's parameters fit the maths exactly."""
  names = set(leaves)
  if kind == 'embed':
    table = leaves.get('embedding')
    return (names == {'embedding'} and jnp.issubdtype(in_dtype, jnp.integer)
            and table.ndim == 2 and out_shape == in_shape + (table.shape[1],))
  if kind == 'norm':
    return (bool(names) and names <= {'scale', 'bias'} and
            in_shape == out_shape and
            all(v.shape == (out_shape[-1],) for v in leaves.values()))
  return False


def find_sites(batch_loss, params, batch) -> list[Site]:
  """The layers of `batch_loss`'s model that the fast path can handle."""
  n = jax.tree_util.tree_leaves(batch)[0].shape[0]
  calls: dict[tuple[str, ...], list] = {}
  outer = []  # The trace the loss runs in; layers under nn.remat etc. differ.

  def spy(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    kind = _kind(context.module)
    # Private helpers (e.g. Einsum's `_get_bias_shape`) are not uses of the
    # parameters; public methods other than __call__ (`attend`) are.
    helper = (context.method_name.startswith('_') and
              context.method_name != '__call__')
    if kind is not None and context.method_name != 'setup' and not helper:
      path = tuple(context.module.scope.path)
      x = args[0] if args else None
      calls.setdefault(path, []).append(dict(
          kind=kind, method=context.method_name, module=context.module,
          args=args, kwargs=kwargs,
          nested=tracers.current_trace() != outer[0],
          in_shape=tuple(getattr(x, 'shape', ())),
          in_dtype=getattr(x, 'dtype', None),
          out_shape=tuple(getattr(out, 'shape', ())),
          out_dtype=getattr(out, 'dtype', None)))
    return out

  abstract = lambda t: jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x)), t)
  with nn.intercept_methods(spy):
    # A fresh function each time: a cached trace would skip the interceptor.
    def run(p, b):
      outer.append(tracers.current_trace())
      return batch_loss(p, b)
    jax.eval_shape(run, abstract(params), abstract(batch))

  sites = []
  for path, seen in calls.items():
    if len(seen) != 1 or seen[0]['method'] != '__call__':
      continue  # Shared or tied parameters: leave them to vmap.
    if seen[0]['nested']:
      continue  # Inside a lifted transform: its values cannot leave it.
    call = seen[0]
    leaves = _subtree(params, path)
    if leaves is None or any(hasattr(v, 'keys') for v in leaves.values()):
      continue
    if not (call['in_shape'][:1] == call['out_shape'][:1] == (n,)):
      continue  # Not applied per example.
    view = None
    if call['kind'] == 'linear':
      view = linear_views.linear_view(
          call['module'], call['args'], call['kwargs'], call['in_shape'],
          call['out_shape'], dict(leaves))
      if view is None:
        continue
    elif not _params_fit(call['kind'], dict(leaves), call['in_shape'],
                         call['out_shape'], call['in_dtype']):
      continue
    sites.append(Site(
        path=path, kind=call['kind'], param_names=tuple(sorted(leaves)),
        out_shape=call['out_shape'], out_dtype=call['out_dtype'],
        normalizer=(_normalizer(call['module']) if call['kind'] == 'norm'
                    else None),
        view=view))
  return sites


def _as_sequences(x, n):
  """[n, ..., f] -> [n, T, f]."""
  return jnp.reshape(x, (n, -1, x.shape[-1]))


def _site_squared_norms(site: Site, inputs, out_grads, leaves):
  """Squared norm of each example's gradient for one layer's params -> [n].

  Also returns the per-example kernel gradients [n, d, p] where they were
  formed (long sequences, convolutions), for the clipped sum to reuse; else
  None.
  """
  n = out_grads.shape[0]
  if site.kind == 'linear':
    g = site.view.rows_out(out_grads.astype(jnp.float32))
  else:
    g = _as_sequences(out_grads.astype(jnp.float32), n)
  bias_sq = jnp.sum(jnp.sum(g, axis=1) ** 2, -1) if 'bias' in leaves else 0.0
  if site.kind == 'linear':
    a = site.view.rows_in(inputs.astype(jnp.float32))
    t, d, p = a.shape[1], a.shape[2], g.shape[2]
    per_example = None
    if t == 1:
      sq = jnp.sum(a[:, 0] ** 2, -1) * jnp.sum(g[:, 0] ** 2, -1)
    elif 2 * t * t < d * p:  # Ghost norm through the Gram matrices.
      sq = jnp.sum(jnp.einsum('ntd,nsd->nts', a, a) *
                   jnp.einsum('ntp,nsp->nts', g, g), axis=(1, 2))
    else:  # Cheaper to form each example's kernel gradient.
      per_example = jnp.einsum('ntd,ntp->ndp', a, g)
      sq = jnp.sum(per_example ** 2, axis=(1, 2))
    return sq + bias_sq, per_example
  if site.kind == 'embed':
    ids = jnp.reshape(inputs, (n, -1))
    same = ids[:, :, None] == ids[:, None, :]
    return jnp.sum(jnp.where(same, jnp.einsum('ntd,nsd->nts', g, g), 0.0),
                   axis=(1, 2)), None
  x_hat = _as_sequences(site.normalizer.apply({}, inputs).astype(jnp.float32),
                        n)
  scale_sq = (jnp.sum(jnp.sum(x_hat * g, axis=1) ** 2, -1)
              if 'scale' in leaves else 0.0)
  return scale_sq + bias_sq, None


def _site_clipped_sums(site: Site, inputs, out_grads, factors, leaves,
                       per_example=None) -> dict:
  """Σ_i c_i ∇θ_i for one layer's params, from activations (book-keeping)."""
  n = factors.shape[0]
  keep = factors > 0
  out_grads = out_grads.astype(jnp.float32)
  g = (site.view.rows_out(out_grads) if site.kind == 'linear' else
       _as_sequences(out_grads, n))
  weighted_g = clipping.rows_where(keep, g) * factors[:, None, None]
  sums = {}
  if 'bias' in leaves:
    bias = jnp.sum(weighted_g, axis=(0, 1))
    sums['bias'] = site.view.bias(bias) if site.kind == 'linear' else bias
  if site.kind == 'linear' and per_example is not None:
    sums['kernel'] = site.view.kernel(jnp.einsum(
        'ndp,n->dp', clipping.rows_where(keep, per_example), factors))
  elif site.kind == 'linear':
    a = clipping.rows_where(keep, site.view.rows_in(inputs.astype(
        jnp.float32)))
    sums['kernel'] = site.view.kernel(jnp.einsum('ntd,ntp->dp', a,
                                                 weighted_g))
  elif site.kind == 'embed':
    ids = jnp.reshape(inputs, (-1,))
    sums['embedding'] = jnp.zeros(leaves['embedding'].shape, jnp.float32).at[
        ids].add(jnp.reshape(weighted_g, (-1, g.shape[-1])))
  elif 'scale' in leaves:
    x_hat = clipping.rows_where(keep, _as_sequences(
        site.normalizer.apply({}, inputs).astype(jnp.float32), n))
    sums['scale'] = jnp.einsum('ntc,ntc->c', x_hat, weighted_g)
  return sums  # float32; cast to the parameters' dtypes by the caller.


CLIPPED_SUMS = ('bookkeeping', 'second_backward')


def _forward_with_hooks(batch_loss, batch, by_path):
  """forward(params, perturbations) -> (losses, the known layers' inputs),
  each known layer's output shifted by its (zero) perturbation."""
  def forward(params, perturbations):
    inputs = {}

    def hook(next_fun, args, kwargs, context):
      path = tuple(context.module.scope.path)
      if context.method_name != '__call__' or path not in by_path:
        return next_fun(*args, **kwargs)
      inputs[path] = args[0]
      return next_fun(*args, **kwargs) + perturbations[path]

    with nn.intercept_methods(hook):
      losses = batch_loss(params, batch)
    return losses, inputs
  return forward


def _rest_gradients(batch_loss, flat, rest, batch):
  """Exact per-example gradients of the parameters no site covers."""
  def one(rest_params, example):
    full = traverse_util.unflatten_dict({**flat, **rest_params})
    return batch_loss(full, clipping.expand(example))[0]
  return jax.vmap(jax.grad(one), in_axes=(None, 0))(rest, batch)


def _units(sites, params, inputs, out_grads, rest_grads):
  """The rule's units (the leftover leaves first, then the sites, the order
  the norms were always summed in) and the sites' formed kernel gradients."""
  units, per_example = [], {}
  for path in sorted(rest_grads or {}):  # The pytree's own leaf order.
    units.append(clipping.Unit(
        layer=path[:-1], size=int(rest_grads[path][0].size),
        squared_norms=clipping.squared_norms([rest_grads[path]])))
  for site in sites:
    leaves = _subtree(params, site.path)
    site_sq, per_example[site.path] = _site_squared_norms(
        site, inputs[site.path], out_grads[site.path], leaves)
    units.append(clipping.Unit(
        layer=site.path, size=int(sum(v.size for v in leaves.values())),
        squared_norms=site_sq))
  return units, per_example


def _bookkeeping_sum(sites, params, flat, inputs, out_grads, per_example,
                     rest_grads, unit_factors):
  """Σ_i c_i ∇θ_i from activations, each unit with its own factors."""
  rest_factors = unit_factors[:len(rest_grads or {})]
  site_factors = unit_factors[len(rest_factors):]
  summed = {}
  for site, factors in zip(sites, site_factors):
    sums = _site_clipped_sums(site, inputs[site.path], out_grads[site.path],
                              factors, _subtree(params, site.path),
                              per_example[site.path])
    summed.update({site.path + (k,): v for k, v in sums.items()})
  if rest_grads:
    summed.update(clipping.weighted_sum(rest_grads, rest_factors))
  flat_sum = {k: summed[k].astype(v.dtype) for k, v in flat.items()}
  grad_sum = traverse_util.unflatten_dict(flat_sum)
  return grad_sum if isinstance(params, dict) else type(params)(grad_sum)


def fast_clipped_chunk(batch_loss, clip_norm,
                       clipped_sum: str = 'bookkeeping',
                       rule: clipping.ClipRule = GlobalNorm()
                       ) -> clipping.ClippedChunk:
  """The clipped sum of a chunk, fast for known layers, vmap for the rest.

  One forward pass, kept with its residuals (`jax.vjp`). A first backward pass
  stops at the known layers' outputs (the output gradients g) and gives every
  example's per-layer gradient norms, from which `rule` decides the clip
  factors. The clipped sum Σ_i c_i ∇θ_i is then formed in one of two ways:

  * 'bookkeeping' (Bu et al. 2023): from the stored activations and output
    gradients, aᵀ (c ∘ g) per layer, with no second backward pass; the
    parameters left to vmap are summed from their per-example gradients.
  * 'second_backward' (ghost clipping, Li et al. 2022): a second backward
    pass of the same forward with cotangent c, i.e. the ordinary gradient of
    Σ_i c_i ℓ_i. It lets XLA's own weight-gradient kernels (e.g. for
    convolutions) do the work. A chunk with a dropped (non-finite) example
    or padding slot takes the book-keeping route instead, whose masking is
    exact where a backward pass would spread 0 · NaN. (The backward pass is
    linear in its cotangent, so a row whose first-pass quantities are all
    finite contributes finitely to the second.) A rule that weighs layers
    apart (not `rule.uniform`) always takes the book-keeping route: one
    cotangent cannot carry several factors per example.

  Args:
    batch_loss: `batch_loss(params, batch) -> [n]`; `params` is the Flax
      'params' collection the model is applied with.
    clip_norm: C > 0, or inf (possibly traced).
    clipped_sum: 'bookkeeping' or 'second_backward'; both give the same sum up
      to floating-point rounding.
    rule: the clip rule (`jaxdp.clipping.RULES`; default global).

  Returns:
    chunk(params, batch, mask) -> (clipped sum, ClippingStats), equal to
    `jaxdp.clipping.vmap.vmap_clipped_chunk` up to floating-point rounding.
  """
  if clipped_sum not in CLIPPED_SUMS:
    raise ValueError(f'clipped_sum must be one of {CLIPPED_SUMS}, got '
                     f'{clipped_sum!r}')

  def chunk(params, batch, mask):
    sites = find_sites(batch_loss, params, batch)
    flat = traverse_util.flatten_dict(params)
    covered = {s.path + (name,) for s in sites for name in s.param_names}
    rest = {k: v for k, v in flat.items() if k not in covered}
    zeros = {s.path: jnp.zeros(s.out_shape, s.out_dtype) for s in sites}
    forward = _forward_with_hooks(batch_loss, batch,
                                  {site.path: site for site in sites})
    losses, backward, inputs = jax.vjp(forward, params, zeros, has_aux=True)
    missed = [s.path for s in sites if s.path not in inputs]
    if missed:  # E.g. a jitted loss whose cached trace skipped the hook.
      raise ValueError(
          f'layers {missed} were not seen on the second pass; do not wrap '
          "the loss in jax.jit, or set perf.clipping='vmap'")
    # Backward pass 1: output gradients of the known layers (the parameter
    # cotangent is unused here and compiled away).
    _, out_grads = backward(jnp.where(mask, 1.0, 0.0).astype(losses.dtype))
    rest_grads = (_rest_gradients(batch_loss, flat, rest, batch) if rest
                  else None)
    units, per_example = _units(sites, params, inputs, out_grads, rest_grads)
    out = rule.clip(units, mask, clip_norm)
    bookkeeping = lambda: _bookkeeping_sum(sites, params, flat, inputs,
                                           out_grads, per_example,
                                           rest_grads, out.factors)
    if clipped_sum == 'bookkeeping' or not rule.uniform:
      grad_sum = bookkeeping()
    else:
      # The second pass runs outside the cond: inside one, XLA's CPU backend
      # ran it several times slower. The rare book-keeping branch costs
      # nothing unless taken.
      second, _ = backward(out.factors[0].astype(losses.dtype))
      second = jax.tree_util.tree_map(lambda g, p: g.astype(p.dtype), second,
                                      params)
      grad_sum = jax.lax.cond(jnp.all(jnp.isfinite(out.norms)),
                              lambda: second, bookkeeping)
    stats = clipping.ClippingStats(norms=jnp.where(mask, out.norms, 0.0),
                                   losses=jnp.where(mask, losses, 0.0),
                                   dropped=out.dropped, clipped=out.clipped)
    return grad_sum, stats

  return chunk

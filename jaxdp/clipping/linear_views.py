"""Flax layers that are linear in their kernel, seen as a Dense layer on rows.

Dense, Conv, DenseGeneral and Einsum all compute, for example i,
y_i = a_i W + b up to a fixed rearrangement: a_i [T, d] (T "rows": sequence
positions, conv output positions, ...) and g_i = ∂ℓ_i/∂y_i as [T, p]. Once a
layer is seen that way, one formula gives every per-example gradient norm and
clipped sum (`fast_clipping`). A `LinearView` holds the rearrangement:

* `rows_in`:  the layer's input [n, ...] -> a [n, T, d]
* `rows_out`: an output-shaped array [n, ...] -> g [n, T, p]
* `kernel`:   a [d, p] matrix -> the kernel parameter's own shape
* `bias`:     a [p] vector -> the bias parameter's own shape

`linear_view` returns None for any layer or call it is not sure about
(grouped or masked convolutions, kernel batch dimensions, ellipses, repeated
indices, shapes that do not match); such layers keep the exact vmap path.
"""

import dataclasses
import itertools
import math
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp


LINEAR_TYPES = (nn.Dense, nn.Conv, nn.DenseGeneral, nn.Einsum)


@dataclasses.dataclass(frozen=True)
class LinearView:
  d: int  # Input features per row.
  p: int  # Output features per row.
  rows_in: Callable[[jax.Array], jax.Array]
  rows_out: Callable[[jax.Array], jax.Array]
  kernel: Callable[[jax.Array], jax.Array]
  bias: Callable[[jax.Array], jax.Array]


def _rows(n: int, width: int) -> Callable[[jax.Array], jax.Array]:
  return lambda x: jnp.reshape(x, (n, -1, width))


def _conv_unfold(conv: nn.Conv, in_shape) -> Optional[Callable]:
  """x -> the patches a Conv multiplies by its kernel, or None if unusual.

  Patches come from strided slices of the padded input, one per window
  offset, features ordered (*window, in) like the kernel's leading axes. On
  CPU this is about 1.6× faster than `lax.conv_general_dilated_patches`,
  which runs a convolution with an identity kernel.
  """
  nd = len(conv.kernel_size)
  as_tuple = lambda v: (v,) * nd if isinstance(v, int) else tuple(v or (1,) * nd)
  if (conv.feature_group_count != 1 or conv.mask is not None or
      any(d != 1 for d in as_tuple(conv.input_dilation))):
    return None
  window, strides = tuple(conv.kernel_size), as_tuple(conv.strides)
  dilation = as_tuple(conv.kernel_dilation)
  spatial = tuple(in_shape[1:-1])
  reach = tuple((w - 1) * d + 1 for w, d in zip(window, dilation))
  padding = conv.padding
  if isinstance(padding, str):
    if padding not in ('SAME', 'VALID'):
      return None
    padding = jax.lax.padtype_to_pads(spatial, reach, strides, padding)
  elif isinstance(padding, int):
    padding = [(padding, padding)] * nd
  else:
    padding = [(p, p) if isinstance(p, int) else tuple(p) for p in padding]
  out = tuple((s + lo + hi - r) // st + 1
              for s, (lo, hi), r, st in zip(spatial, padding, reach, strides))

  def unfold(x):
    x = jnp.pad(x, [(0, 0)] + [tuple(p) for p in padding] + [(0, 0)])
    columns = []
    for offset in itertools.product(*(range(w) for w in window)):
      start = tuple(o * d for o, d in zip(offset, dilation))
      limit = tuple(s + (o - 1) * st + 1
                    for s, o, st in zip(start, out, strides))
      columns.append(jax.lax.slice(x, (0,) + start + (0,),
                                   (x.shape[0],) + limit + (x.shape[-1],),
                                   (1,) + strides + (1,)))
    return jnp.stack(columns, axis=-2)  # [n, *out, window positions, in]

  return unfold


def _dense(in_shape, out_shape, kernel_shape):
  d, p = in_shape[-1], out_shape[-1]
  if kernel_shape != (d, p):
    return None
  n = in_shape[0]
  return LinearView(d, p, _rows(n, d), _rows(n, p), lambda k: k, lambda b: b)


def _conv(module, in_shape, out_shape, kernel_shape):
  if not len(in_shape) == len(out_shape) == len(kernel_shape) or (
      kernel_shape[-2:] != (in_shape[-1], out_shape[-1])):
    return None
  unfold = _conv_unfold(module, in_shape)
  if unfold is None:
    return None
  patches = jax.eval_shape(unfold, jax.ShapeDtypeStruct(in_shape, jnp.float32))
  if patches.shape[1:-2] != tuple(out_shape[1:-1]):
    return None  # Our reading of the padding disagrees with the layer's.
  n, p = in_shape[0], out_shape[-1]
  d = math.prod(kernel_shape[:-1])
  return LinearView(d, p, lambda x: _rows(n, d)(unfold(x)), _rows(n, p),
                    lambda k: jnp.reshape(k, kernel_shape), lambda b: b)


def _dense_general(module, in_shape, out_shape, kernel_shape):
  if module.batch_dims not in ((), None):
    return None
  ndim = len(in_shape)
  axes = module.axis if isinstance(module.axis, (tuple, list)) else (
      module.axis,)
  axes = tuple(sorted(a % ndim for a in axes))  # Flax's own order.
  features = (tuple(module.features)
              if isinstance(module.features, (tuple, list))
              else (module.features,))
  if 0 in axes or kernel_shape != tuple(in_shape[a] for a in axes) + features:
    return None
  n = in_shape[0]
  d, p = math.prod(in_shape[a] for a in axes), math.prod(features)
  last = tuple(range(ndim - len(axes), ndim))
  return LinearView(
      d, p, lambda x: _rows(n, d)(jnp.moveaxis(x, axes, last)), _rows(n, p),
      lambda k: jnp.reshape(k, kernel_shape),
      lambda b: jnp.reshape(b, features))


def _einsum(spec: str, in_shape, out_shape, kernel_shape):
  """'lhs,rhs->out' with the example axis first; None if not a plain Dense."""
  spec = spec.replace(' ', '')
  if '...' in spec or spec.count('->') != 1 or spec.count(',') != 1:
    return None
  operands, out = spec.split('->')
  lhs, rhs = operands.split(',')
  if (any(len(set(s)) != len(s) for s in (lhs, rhs, out)) or
      len(lhs) != len(in_shape) or len(out) != len(out_shape) or
      len(rhs) != len(kernel_shape) or not lhs or lhs[:1] != out[:1]):
    return None
  contracted = ''.join(c for c in rhs if c in lhs and c not in out)
  features = ''.join(c for c in out if c in rhs and c not in lhs)
  rows = ''.join(c for c in out if c in lhs and c not in rhs)
  # Every index plays exactly one part: no kernel batch axes, no axis summed
  # on one operand alone.
  if (set(rhs) != set(contracted + features) or
      set(lhs) != set(contracted + rows) or set(out) != set(rows + features)
      or rows[:1] != lhs[:1]):
    return None
  size = dict(zip(lhs, in_shape)) | dict(zip(out, out_shape))
  if any(size.get(c) != s for c, s in zip(rhs, kernel_shape)):
    return None
  n = in_shape[0]
  d = math.prod(size[c] for c in contracted)
  p = math.prod(size[c] for c in features)
  split = tuple(size[c] for c in contracted + features)
  return LinearView(
      d, p, lambda x: _rows(n, d)(jnp.einsum(f'{lhs}->{rows}{contracted}', x)),
      lambda g: _rows(n, p)(jnp.einsum(f'{out}->{rows}{features}', g)),
      lambda k: jnp.einsum(f'{contracted}{features}->{rhs}',
                           jnp.reshape(k, split)),
      lambda b: jnp.reshape(b, tuple(size[c] for c in features)))


def linear_view(module: nn.Module, args: tuple, kwargs: dict,
                in_shape: tuple[int, ...], out_shape: tuple[int, ...],
                leaves: dict[str, Any]) -> Optional[LinearView]:
  """How one call of `module` is a Dense layer on rows, or None.

  Args:
    module: the Flax module called.
    args, kwargs: the call's arguments (Einsum may take its equation here).
    in_shape, out_shape: shapes of the call's input and output, [n, ...].
    leaves: the module's parameters {'kernel': ..., 'bias': ...}.
  """
  if not set(leaves) <= {'kernel', 'bias'} or 'kernel' not in leaves:
    return None
  kernel_shape = tuple(leaves['kernel'].shape)
  kind = type(module)
  view = None
  if kind is nn.Dense:
    view = _dense(in_shape, out_shape, kernel_shape)
  elif kind is nn.Conv:
    view = _conv(module, in_shape, out_shape, kernel_shape)
  elif kind is nn.DenseGeneral:
    view = _dense_general(module, in_shape, out_shape, kernel_shape)
  elif kind is nn.Einsum:
    spec = kwargs.get('einsum_str', args[1] if len(args) > 1 else None)
    spec = spec if spec is not None else module.einsum_str
    view = _einsum(spec, in_shape, out_shape, kernel_shape) if spec else None
  if view is None or 'bias' not in leaves:
    return view
  # The bias must be one value per output feature, in the output's order.
  expected = jax.eval_shape(view.bias, jax.ShapeDtypeStruct((view.p,),
                                                            jnp.float32))
  return view if tuple(leaves['bias'].shape) == expected.shape else None


"""Refuses models whose layers mix examples within a batch.

DP-SGD's sensitivity argument needs each example's gradient to depend on that
example alone. BatchNorm normalises with statistics of the whole batch, so one
example's gradient depends on every other example in it, and its running
statistics are an unprivatised aggregate of the data. GroupNorm and LayerNorm
work per example and are fine.
"""

import flax.linen as nn
import jax

from jaxdp.errors import ConfigError


def check_no_example_mixing(model: nn.Module, sample_input: jax.Array,
                            field: str = 'model.name') -> None:
  """Raises ConfigError if `model` holds BatchNorm or batch-level state."""
  found = []

  def spy(next_fun, args, kwargs, context):
    if isinstance(context.module, nn.BatchNorm):
      found.append(context.module.name or type(context.module).__name__)
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(spy):
    variables = jax.eval_shape(model.init, jax.random.key(0), sample_input)
  mutable = sorted(c for c in variables if c != 'params')
  if found or 'batch_stats' in mutable:
    raise ConfigError(
        field,
        f'{type(model).__name__} uses BatchNorm ({", ".join(found) or "batch_stats"}),'
        ' which mixes examples within a batch, so per-example clipping no '
        'longer bounds any one example\'s influence',
        'replace BatchNorm with GroupNorm or LayerNorm (De et al. 2022 use '
        'GroupNorm), or drop normalisation')
  if mutable:
    raise ConfigError(
        field,
        f'{type(model).__name__} keeps state outside its parameters '
        f'(collections {mutable}), which DP-SGD cannot privatise',
        'keep all trainable state in the "params" collection')

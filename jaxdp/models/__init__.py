"""Models by name. A new model is one file here plus one line in `_BUILDERS`."""

from typing import Callable

import flax.linen as nn
import jax.numpy as jnp

from jaxdp.errors import ConfigError
from jaxdp.models.example_mixing import check_no_example_mixing
from jaxdp.models.cifar_cnn import CifarCNN
from jaxdp.models.mlp import MLP
from jaxdp.models.scatter_nets import ScatterCNN
from jaxdp.models.scatter_nets import ScatterLinear
from jaxdp.models.tanh_cnn import TanhCNN
from jaxdp.models.transformer import TransformerLM
from jaxdp.models.wide_resnet import WideResNet

ACTIVATIONS: dict[str, Callable[[jnp.ndarray], jnp.ndarray]] = {
    'relu': nn.relu,
    'tanh': jnp.tanh,
    'gelu': nn.gelu,
    'elu': nn.elu,
    'sigmoid': nn.sigmoid,
}

_BUILDERS = {
    'mlp': lambda cfg, k, act: MLP(tuple(cfg.hidden_sizes), k, act),
    'tanh_cnn': lambda cfg, k, act: TanhCNN(k, act),
    'cifar_cnn': lambda cfg, k, act: CifarCNN(k, act),
    'scatter_linear': lambda cfg, k, act: ScatterLinear(k, cfg.groups),
    'scatter_cnn': lambda cfg, k, act: ScatterCNN(k, cfg.groups, act),
    'scatter_cnn_cifar10': lambda cfg, k, act: ScatterCNN(k, cfg.groups, act,
                                                          cifar=True),
    'wide_resnet': lambda cfg, k, act: WideResNet(
        k, cfg.depth, cfg.width, cfg.groups, act, cfg.weight_standardization),
}

MODELS = tuple(_BUILDERS)


def build_model(model_config, num_classes: int) -> nn.Module:
  """The Flax module named `model_config.name`."""
  if model_config.name not in _BUILDERS:
    raise ConfigError('model.name', f'unknown model {model_config.name!r}',
                      f'use one of {", ".join(MODELS)}')
  if model_config.activation not in ACTIVATIONS:
    raise ConfigError('model.activation',
                      f'unknown activation {model_config.activation!r}',
                      f'use one of {", ".join(ACTIVATIONS)}')
  try:
    return _BUILDERS[model_config.name](model_config, num_classes,
                                        ACTIVATIONS[model_config.activation])
  except ConfigError as e:  # A model names its own field; say where it is.
    raise ConfigError(f'model.{e.field}', e.problem, e.fix) from e


__all__ = ['CifarCNN', 'MLP', 'ScatterCNN', 'ScatterLinear', 'TanhCNN',
           'TransformerLM', 'WideResNet', 'build_model',
           'check_no_example_mixing', 'MODELS', 'ACTIVATIONS']

"""Filling a nested parameter dict leaf by leaf (shared by the loaders)."""

import numpy as np


def put(params: dict, path: tuple, value, dtype) -> None:
  """params[path[0]]...[path[-1]] = value as a `dtype` array."""
  node = params
  for name in path[:-1]:
    node = node.setdefault(name, {})
  node[path[-1]] = np.asarray(value, dtype)

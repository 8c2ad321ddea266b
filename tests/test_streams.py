"""Every random stream is declared once, in jaxdp.streams, and no two agree."""

import ast
import pathlib

import jax
import numpy as np

from jaxdp import streams

_PACKAGE = pathlib.Path(streams.__file__).parent


def _stream_constants() -> dict:
  return {name: value for name, value in vars(streams).items()
          if name.endswith('_STREAM')}


def test_every_stream_constant_differs():
  values = _stream_constants()
  assert len(values) >= 12
  assert all(isinstance(v, int) for v in values.values())
  assert len(set(values.values())) == len(values), values


def test_no_module_declares_a_stream_of_its_own():
  found = []
  for path in sorted(_PACKAGE.rglob('*.py')):
    if path.name == 'streams.py':
      continue
    for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'))):
      targets = (node.targets if isinstance(node, ast.Assign) else
                 [node.target] if isinstance(node, ast.AnnAssign) else [])
      for target in targets:
        names = ([t.id for t in target.elts if isinstance(t, ast.Name)]
                 if isinstance(target, ast.Tuple) else
                 [target.id] if isinstance(target, ast.Name) else [])
        found += [f'{path.relative_to(_PACKAGE)}: {n}' for n in names
                  if n.endswith('_STREAM')]
  assert not found, found


def test_keys_are_their_streams_folded_into_the_seed():
  key_data = jax.random.key_data
  np.testing.assert_array_equal(
      key_data(streams.noise_key(7)),
      key_data(jax.random.fold_in(jax.random.key(7), streams.NOISE_STREAM)))
  np.testing.assert_array_equal(
      key_data(streams.init_key(7)),
      key_data(jax.random.fold_in(jax.random.key(7), streams.INIT_STREAM)))
  assert not np.array_equal(key_data(streams.noise_key(7)),
                            key_data(streams.init_key(7)))


def test_secure_seeds_fill_the_whole_key():
  seed = streams.secure_seed()
  assert seed > streams.MAX_CONFIG_SEED and seed.bit_length() == 128
  other = seed ^ (1 << 100)  # Differs only above 64 bits.
  assert not np.array_equal(jax.random.key_data(streams.noise_key(seed)),
                            jax.random.key_data(streams.noise_key(other)))

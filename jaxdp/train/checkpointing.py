"""Checkpoints of a training run, written with orbax-checkpoint.

A checkpoint is `<workdir>/checkpoints/<executed>/` with two items:

* ``state``: the TrainState pytree (step, params, optimizer state including the
  noise key and noise counter, learning-rate scale). Typed PRNG keys are stored
  as their raw key data and rewrapped on restore.
* ``meta``: JSON with everything else a bit-exact resume needs: executions,
  privacy settings and seeds (the sampler's state is its seed and the
  execution index), the DpEvent history, the resolved config, the evaluation
  history, rollback bookkeeping, and the ledger's length and head hash.

Checkpoints are numbered by *executions* (steps run, counting those undone by
rollbacks), which only grow, so a rollback never overwrites a checkpoint.
"""

import os
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp

from jaxdp.errors import ConfigError

DIRNAME = 'checkpoints'
FORMAT = 1  # Bumped when the meta layout changes incompatibly.


def _is_key(x) -> bool:
  return hasattr(x, 'dtype') and jax.dtypes.issubdtype(x.dtype,
                                                        jax.dtypes.prng_key)


def _to_storable(tree):
  return jax.tree_util.tree_map(
      lambda x: jax.random.key_data(x) if _is_key(x) else x, tree)


def _from_storable(tree, template):
  return jax.tree_util.tree_map(
      lambda x, t: jax.random.wrap_key_data(x, impl=jax.random.key_impl(t))
      if _is_key(t) else x, tree, template)


def _array_specs(storable) -> dict:
  """keystr -> [shape, dtype] of every array in a storable tree."""
  leaves = jax.tree_util.tree_flatten_with_path(storable)[0]
  return {jax.tree_util.keystr(path): [list(x.shape), str(x.dtype)]
          for path, x in leaves}


def _error(path: str, problem: str) -> ConfigError:
  return ConfigError(
      'checkpoint', f'{path}: {problem}',
      'resume with the model and optimizer settings this workdir was '
      'started with (see its config.json), or start over with a new --workdir; '
      'the checkpoint and ledger are left untouched')


class Checkpointer:
  """Saves and restores one workdir's checkpoints."""

  def __init__(self, workdir: str, keep: Optional[int]):
    self.directory = os.path.join(os.path.abspath(workdir), DIRNAME)
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True,
            # Synchronous: a checkpoint is on disk before the loop logs it.
            enable_async_checkpointing=False),
        item_names=('state', 'meta'))

  def latest(self) -> Optional[int]:
    """The executions of the newest checkpoint, None if there is none."""
    self._manager.reload()
    return self._manager.latest_step()

  def save(self, executed: int, state: Any, meta: dict) -> None:
    storable = _to_storable(state)
    meta = dict(meta, format=FORMAT, executed=int(executed),
                arrays=_array_specs(storable))
    self._manager.save(
        int(executed),
        args=ocp.args.Composite(state=ocp.args.StandardSave(storable),
                                meta=ocp.args.JsonSave(meta)),
        force=True)
    self._manager.wait_until_finished()

  def read_meta(self, executed: int) -> dict:
    path = os.path.join(self.directory, str(executed))
    try:
      meta = self._manager.restore(
          executed, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta']
    except Exception as e:  # orbax raises many types for damaged files.
      raise _error(path, f'cannot read its metadata ({type(e).__name__}: '
                   f'{e})') from e
    if not isinstance(meta, dict) or meta.get('format') != FORMAT:
      raise _error(path, f'unknown checkpoint format '
                   f'{meta.get("format") if isinstance(meta, dict) else meta!r}')
    return meta

  def restore_arrays(self, executed: int) -> dict:
    """The saved state as nested dicts of arrays (no template needed).

    For reading a trained model's parameters (`['params']`, or
    `['ema_params']`) outside a training run, e.g. to generate text.
    """
    path = os.path.join(self.directory, str(executed))
    self.read_meta(executed)
    try:
      return self._manager.restore(
          executed, args=ocp.args.Composite(
              state=ocp.args.StandardRestore()))['state']
    except Exception as e:  # orbax raises many types for damaged files.
      raise _error(path, f'cannot restore its state ({type(e).__name__}: '
                   f'{str(e)[:300]})') from e

  def restore(self, executed: int, template: Any) -> tuple:
    """(state shaped like `template`, meta) of checkpoint `executed`."""
    path = os.path.join(self.directory, str(executed))
    meta = self.read_meta(executed)
    storable = _to_storable(template)
    saved, wanted = meta.get('arrays', {}), _array_specs(storable)
    if saved != wanted:  # Checked first: orbax would fail array by array.
      names = sorted(set(saved) | set(wanted))
      name = next(n for n in names if saved.get(n) != wanted.get(n))
      raise _error(path, f'array {name} is {saved.get(name)} in the '
                   f'checkpoint but {wanted.get(name)} for this model and '
                   'optimizer')
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct,
                                      storable)
    try:
      restored = self._manager.restore(
          executed, args=ocp.args.Composite(
              state=ocp.args.StandardRestore(abstract)))['state']
    except Exception as e:  # orbax raises many types for damaged files.
      raise _error(path, f'cannot restore its state ({type(e).__name__}: '
                   f'{str(e)[:300]})') from e
    return _from_storable(restored, template), meta

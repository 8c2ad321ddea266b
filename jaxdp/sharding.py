"""Data parallelism: a device mesh, where each array lives, the global sum.

DP-SGD's step is, for a padded batch of P slots split over D devices,

    S = Σ_devices Σ_{i in the device's P/D slots} clip_C(g_i),
    ĝ = (S + N(0, σ²C² I)) / B_expected.

`global_clipped_sum` runs the per-example clipping of each device's slots
under `jax.shard_map` and adds the devices' partial sums with one `psum`; the
result is the same global S on every device. Noise is added afterwards, by
the optax chain, outside the sharded function: it is drawn once per logical
step from one key, for the global sum, and so can be neither added per device
(√D or D times the intended variance before averaging, or D times too little
after dividing by a per-device batch) nor drawn differently on different
devices (every device computes the same draw from the same key).

Everything runs under `jax.jit` with `NamedSharding`s on a one-axis mesh
(`data`): the batch is split along its leading axis, and the parameters and
optimizer state are replicated, or split FSDP-style (`fsdp`: each array along
its largest axis divisible by D; XLA gathers them where they are used). Every
device processes the same number of slots (P is a multiple of D times the
microbatch size), so no device waits on another's larger share; padding slots
are masked and cost the same as real ones, which keeps step time independent of
the private batch size.

On several hosts (`jaxdp.distributed`), every host draws the same sampled
index list from the shared seed and gathers only the rows its own devices
hold (`put_batch`).
"""

import dataclasses
from typing import Any, Callable

import jax
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

from jaxdp.errors import ConfigError

DATA = 'data'  # The mesh axis the batch (and FSDP parameters) are split on.
PARAM_SHARDINGS = ('replicated', 'fsdp')


def make_mesh(num_devices: int) -> Mesh:
  """A one-axis mesh over the first `num_devices` devices (0 = all)."""
  available = jax.devices()
  if not (isinstance(num_devices, int) and 0 <= num_devices <= len(available)):
    raise ConfigError('perf.num_devices',
                      f'must be an integer in [0, {len(available)}] (the '
                      f'devices JAX sees), got {num_devices!r}',
                      'use 0 for every device, or a smaller count')
  count = num_devices or len(available)
  if jax.process_count() > 1 and count != len(available):
    raise ConfigError('perf.num_devices',
                      f'{count} of {len(available)} devices on '
                      f'{jax.process_count()} hosts',
                      'use 0 (every device) when running on several hosts')
  return Mesh(np.asarray(available[:count]), (DATA,))


def _fsdp_spec(shape, num_devices: int) -> P:
  """Splits the largest axis divisible by D; replicates arrays with none."""
  axes = [a for a in np.argsort(shape)[::-1] if shape[a] % num_devices == 0
          and shape[a] >= num_devices]
  if num_devices == 1 or not axes:
    return P()
  spec = [None] * len(shape)
  spec[int(axes[0])] = DATA
  return P(*spec)


def _put_global(x, sharding: NamedSharding):
  """One host's copy of a value -> the global array with `sharding`."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    return jax.device_put(x, sharding)  # Already global: reshard if needed.
  if jax.dtypes.issubdtype(jax.numpy.result_type(x), jax.dtypes.prng_key):
    return jax.random.wrap_key_data(
        _put_global(jax.random.key_data(x), sharding),
        impl=jax.random.key_impl(x))
  host = np.asarray(x)
  return jax.make_array_from_callback(host.shape, sharding,
                                      lambda index: host[index])


@dataclasses.dataclass(frozen=True)
class Placement:
  """The mesh of a run and the shardings of its state and batches."""

  mesh: Mesh
  param_sharding: str = 'replicated'

  def __post_init__(self):
    if self.param_sharding not in PARAM_SHARDINGS:
      raise ConfigError('perf.param_sharding',
                        f'unknown sharding {self.param_sharding!r}',
                        f'use one of {", ".join(PARAM_SHARDINGS)}')

  @property
  def num_devices(self) -> int:
    return self.mesh.size

  @property
  def replicated(self) -> NamedSharding:
    return NamedSharding(self.mesh, P())

  @property
  def split(self) -> NamedSharding:
    """Leading axis split over the devices (batches, per-example values)."""
    return NamedSharding(self.mesh, P(DATA))

  def state_shardings(self, state: Any) -> Any:
    """A NamedSharding for every array of `state` (same tree)."""
    def one(x):
      if self.param_sharding == 'fsdp' and np.ndim(x) > 0:
        return NamedSharding(self.mesh, _fsdp_spec(np.shape(x),
                                                   self.num_devices))
      return self.replicated
    return jax.tree_util.tree_map(one, state)

  def put_state(self, state: Any) -> Any:
    """`state` placed on the mesh (a no-op for arrays already there).

    On several hosts each host holds the same values (same seed, same
    checkpoint) and contributes the shards of its own devices.
    """
    shardings = self.state_shardings(state)
    if jax.process_count() == 1:
      return jax.device_put(state, shardings)
    return jax.tree_util.tree_map(_put_global, state, shardings)

  def put_batch(self, gather: Callable[[np.ndarray], Any], size: int) -> Any:
    """A global batch of `size` slots, each host gathering only its own rows.

    Args:
      gather: host function from slot positions (an int array) to a pytree
        of NumPy arrays whose leading axis has one row per position.
      size: the number of slots (the padded batch size), a multiple of D.

    Returns:
      The pytree `gather(np.arange(size))` would give, as jax.Arrays split
      over the mesh, built from the rows of this host's devices only.
    """
    if size % self.num_devices:
      raise ValueError(f'batch of {size} slots does not split over '
                       f'{self.num_devices} devices')
    cache = {}

    def rows(index):  # index: the slices of one device's shard.
      span = index[0].indices(size)
      if span not in cache:
        cache[span] = jax.tree_util.tree_leaves(gather(np.arange(*span)))
      return cache[span]

    example = gather(np.arange(1))
    leaves, treedef = jax.tree_util.tree_flatten(example)
    arrays = [
        jax.make_array_from_callback(
            (size,) + np.shape(leaf)[1:], self.split,
            lambda index, i=i: rows(index)[i])
        for i, leaf in enumerate(leaves)]
    return jax.tree_util.tree_unflatten(treedef, arrays)

  def global_clipped_sum(self, per_device_sum: Callable) -> Callable:
    """f(params, frozen, batch, mask, clip_norm) -> (global sum, stats).

    Data-parallel: `per_device_sum` (same signature; one device's view:
    its slots only, with the replicated frozen parameters) runs on every
    device's share; the partial sums are added across devices. The result
    has the sensitivity of the single-device sum: the slots are disjoint and
    each example is clipped once, wherever it lands. `clip_norm` (None, or
    adaptive clipping's replicated C_t) is passed through.
    """
    def per_device(params, frozen, batch, mask, clip_norm):
      partial, stats = per_device_sum(params, frozen, batch, mask, clip_norm)
      return jax.lax.psum(partial, DATA), stats

    # check_vma=False: the body is plain per-device code. With JAX's
    # varying-axis typing, differentiating with respect to the replicated
    # parameters would add a psum of its own inside the per-example
    # gradients; here the only cross-device operation is the psum above.
    return jax.shard_map(per_device, mesh=self.mesh,
                         in_specs=(P(), P(), P(DATA), P(DATA), P()),
                         out_specs=(P(), P(DATA)), check_vma=False)

"""Multi-host runs on JAX's own runtime (`jax.distributed`).

Every host runs the same program. They share the seed, so every host draws
the same sampled index list and gathers only the rows of its own devices
(`sharding.Placement.put_batch`); the clipped sums are added across all
devices and the noise, drawn from the shared key, is added once to the global
sum. Files in the workdir (the privacy ledger, results, the workdir lock) are
written by host 0 alone; checkpoints are written by orbax, which coordinates
the hosts itself. The workdir must therefore be on a filesystem every host
sees.

Decisions that end or steer the loop must be the same on every host, or the
hosts would wait on each other forever. The budget test uses counts every
host holds; which checkpoint exists is host 0's listing, sent to all; a
divergence seen by any host acts on all of them, with host 0's reason;
SIGTERM on any host stops all of them at one step that JAX's preemption
service agrees on (SIGINT at the next poll, every `SIGNAL_POLL_STEPS` steps);
and the hosts check that they loaded the same data and read the same ledger.
"""

from typing import Optional

import jax
from jax.experimental import multihost_utils
import numpy as np

from jaxdp.errors import ConfigError


def initialize(coordinator_address: str = '', num_processes: int = 0,
               process_id: int = -1) -> None:
  """Joins this process to a multi-host run.

  Args:
    coordinator_address: host:port of process 0's coordinator. Empty: JAX
      detects the cluster from the environment (SLURM, Open MPI, Cloud TPU
      pod slices, GKE), which then also gives the two values below.
    num_processes: number of processes (hosts) in the run; 0 = detect.
    process_id: this process's index in [0, num_processes); -1 = detect.
  """
  kwargs = {}
  if coordinator_address:
    if not (num_processes > 0 and 0 <= process_id < num_processes):
      raise ConfigError(
          'process_id',
          f'--coordinator_address needs --num_processes > 0 and '
          f'--process_id in [0, num_processes); got {num_processes}, '
          f'{process_id}', 'give all three flags, or none to let JAX read '
          'the cluster environment')
    kwargs = dict(coordinator_address=coordinator_address,
                  num_processes=num_processes, process_id=process_id)
  jax.distributed.initialize(**kwargs)


def is_primary() -> bool:
  """Whether this host writes the workdir's files (host 0)."""
  return jax.process_index() == 0


def any_host(flag: bool) -> bool:
  """True on every host when `flag` is True on at least one."""
  if jax.process_count() == 1:
    return bool(flag)
  flags = multihost_utils.process_allgather(np.asarray(bool(flag)))
  return bool(np.any(flags))


# On several hosts, signals this process catches itself (SIGINT; SIGTERM when
# JAX's preemption service is off) are polled every this many steps: polling
# is an all-gather, which would otherwise make every step wait for the last.
SIGNAL_POLL_STEPS = 10


def preemption_service() -> bool:
  """Whether JAX's preemption service handles SIGTERM (several hosts)."""
  return jax.process_count() > 1 and bool(
      jax.config.jax_enable_preemption_service)


def stop_requested(received: bool, step: int) -> bool:
  """Whether the loop stops before `step` (same answer on every host).

  Args:
    received: whether this host's own handler caught a stop signal.
    step: a counter every host holds, starting at the same value and
      growing by one at each call (JAX's preemption service needs every
      value: a skipped one could be the step it agreed on).
  """
  if jax.process_count() == 1:
    return received
  # SIGTERM on any host: JAX's service picks one step for all of them,
  # without a collective per step.
  if preemption_service() and multihost_utils.reached_preemption_sync_point(
      step):
    return True
  return step % SIGNAL_POLL_STEPS == 0 and any_host(received)


def agreed_reason(reason: Optional[str]) -> Optional[str]:
  """A divergence seen by any host, seen by all, with host 0's wording."""
  if jax.process_count() == 1 or not any_host(reason is not None):
    return reason
  return host0_text(reason or 'divergence detected on another host')


def host0_text(text: str, max_bytes: int = 512) -> str:
  """Host 0's `text` (cut to `max_bytes` of UTF-8) on every host."""
  if jax.process_count() == 1:
    return text
  data = np.zeros(max_bytes, np.uint8)
  raw = text.encode('utf-8')[:max_bytes]
  data[:len(raw)] = np.frombuffer(raw, np.uint8)
  data = np.asarray(multihost_utils.broadcast_one_to_all(data))
  return bytes(data).rstrip(b'\0').decode('utf-8', errors='replace')


def barrier(name: str) -> None:
  """Waits until every host has reached the barrier called `name`."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def host0_int(value: int) -> int:
  """Host 0's `value` (an integer in [0, 2**128)) on every host."""
  if jax.process_count() == 1:
    return value
  words = np.array([(value >> (32 * i)) & 0xFFFFFFFF for i in range(4)],
                   np.uint32)
  words = np.asarray(multihost_utils.broadcast_one_to_all(words))
  return sum(int(w) << (32 * i) for i, w in enumerate(words))


def check_same(field: str, what: str, value: int, fix: str) -> None:
  """ConfigError on every host unless every host holds the same `value`."""
  if jax.process_count() == 1:
    return
  if any_host(host0_int(value) != value):
    raise ConfigError(field, f'the hosts disagree on {what}', fix)

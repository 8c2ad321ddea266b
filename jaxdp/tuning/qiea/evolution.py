"""The quantum-inspired evolutionary algorithm (QIEA) of Han & Kim, maximising.

Han & Kim (2002), "Quantum-inspired evolutionary algorithm for a class of
combinatorial optimization", IEEE TEC 6(6). Each of P individuals is a
register of n Q-bits (`qubits.py`), i.e. a product of n Bernoulli(|β_i|²)
distributions. One generation:

  1. observe   x ~ register, one bitstring per individual;
  2. evaluate  f(x) (in JAX, or on the host: the state is a plain pytree);
  3. rotate    each Q-bit i by Δθ_i from the lookup table below, which turns
               P(x_i = b_i) up when the individual's best b beat x;
  4. Hε        keep every P(1) in [ε, 1 − ε] (Han & Kim 2004, IEEE TEC 8(2));
  5. store     b ← x where f(x) ≥ f(b); the global best likewise;
  6. migrate   every `global_period` generations every b ← global best,
               otherwise b ← best b of its group of `local_group_size`.

Steps 3 and 5 follow the paper's order (rotate towards the b of the previous
generation, then store). With this table, whose only non-zero rows are those
where f(x) < f(b) and so b is kept, the order makes no difference.

Platel, Schliebs & Kasabov (2009), IEEE TEC 13(6), show QIEA is an
estimation-of-distribution algorithm: each register is a probabilistic model
pulled towards its attractor b by a learning rate set by Δθ, and the P
models, coupled only through migration, form a multimodel EDA.

Use from the host (e.g. one training run per observed bitstring):

    state = qiea.init(population, num_qubits)
    for t in range(generations):
      bits = qiea.observe(jax.random.fold_in(key, t), state)
      fitness = np.array([score(b) for b in np.asarray(bits)])
      state = qiea.update(state, bits, fitness, config)
"""

import dataclasses
import functools
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxdp.tuning.qiea import qubits

# Lookup table for the rotation angle, in units of Δθ (Han & Kim 2002,
# Table I, with the angles of their knapsack experiments: θ3 = 0.01π,
# θ5 = −0.01π, all other θ_k = 0). Row 4·x_i + 2·b_i + [f(x) ≥ f(b)];
# columns s(α_i β_i): the quadrant of (α_i, β_i), which decides which way a
# rotation must turn to raise or lower |β_i|². Where either sign works (β = 0
# and moving towards 1, or α = 0 and moving towards 0) we take +1; where the
# Q-bit already sits on the target (α = 0 for 1, β = 0 for 0), 0.
#                x b f≥ | αβ>0  αβ<0  α=0  β=0
ROTATION_TABLE = np.array([
    [0, 0, 0, 0],    # 0 0 F
    [0, 0, 0, 0],    # 0 0 T
    [+1, -1, 0, +1],  # 0 1 F  b beat x: turn towards |1⟩
    [0, 0, 0, 0],    # 0 1 T
    [-1, +1, +1, 0],  # 1 0 F  b beat x: turn towards |0⟩
    [0, 0, 0, 0],    # 1 0 T
    [0, 0, 0, 0],    # 1 1 F
    [0, 0, 0, 0],    # 1 1 T
], np.float32)


@dataclasses.dataclass(frozen=True)
class QieaConfig:
  """QIEA's constants; hashable, so it can be a static jit argument."""
  # |Δθ| of the rotation gate, 0.01π in Han & Kim's (2002) experiments. A
  # Q-bit needs ~(π/4)/Δθ = 25 steps from 1/√2 to near-certainty.
  delta_theta: float = 0.01 * math.pi
  # ε of the Hε gate (Han & Kim 2004): the least P(0) or P(1) of any Q-bit,
  # a per-bit exploration floor (here 1%). 0 switches the gate off, giving
  # the plain QEA of 2002.
  epsilon: float = 0.01
  # Individuals per local-migration group (consecutive indices, the last
  # group shorter if it does not divide P); migration is local every
  # generation that is not a global one, as in Han & Kim (2002).
  local_group_size: int = 2
  # Generations between global migrations (Han & Kim 2002: 100).
  global_period: int = 100


class QieaState(NamedTuple):
  """Everything QIEA carries between generations; a pytree of arrays."""
  amplitudes: jax.Array  # float32 [P, n, 2]: every individual's Q-bits.
  best_bits: jax.Array  # int8 [P, n]: each individual's attractor b.
  best_fitness: jax.Array  # float32 [P]: f(b); −inf before any evaluation.
  generation: jax.Array  # int32 scalar: updates done so far.
  global_bits: jax.Array  # int8 [n]: best solution seen by anyone.
  global_fitness: jax.Array  # float32 scalar: its fitness, −inf at first.


def init(population: int, num_qubits: int) -> QieaState:
  """The start of the search: uniform Q-bits, no best solutions yet.

  With f(b) = −inf, the first update stores every observation as its
  individual's b and rotates nothing, as in Han & Kim (2002), where
  B(0) = P(0).

  Args:
    population: number of individuals P.
    num_qubits: bits per solution n.

  Returns:
    A QieaState.
  """
  # Built in NumPy: starting a search on the host compiles nothing.
  return QieaState(
      amplitudes=qubits.uniform(population, num_qubits),
      best_bits=jnp.asarray(np.zeros((population, num_qubits), np.int8)),
      best_fitness=jnp.asarray(np.full((population,), -np.inf, np.float32)),
      generation=jnp.asarray(np.int32(0)),
      global_bits=jnp.asarray(np.zeros((num_qubits,), np.int8)),
      global_fitness=jnp.asarray(np.float32(-np.inf)))


@jax.jit
def observe(key: jax.Array, state: QieaState) -> jax.Array:
  """Observes every register once: x_i ~ Bernoulli(|β_i|²), independently.

  Args:
    key: PRNG key; use a fresh one per generation, e.g. fold_in(key, t).
    state: the current QieaState (not modified: observing is sampling).

  Returns:
    int8 bits [P, n], one candidate solution per individual.
  """
  return qubits.measure(key, state.amplitudes)


def rotation_angles(amplitudes, bits, best_bits, better,
                    delta_theta: float) -> jax.Array:
  """Δθ_i = delta_theta · ROTATION_TABLE[x_i, b_i, f(x) ≥ f(b), s(α_i β_i)].

  Args:
    amplitudes: real [P, n, 2].
    bits: observed x, [P, n] in {0, 1}.
    best_bits: attractors b, [P, n] in {0, 1}.
    better: bool [P], f(x) ≥ f(b) per individual.
    delta_theta: |Δθ| in radians.

  Returns:
    float32 angles [P, n] for `qubits.rotation`.
  """
  alpha, beta = amplitudes[..., 0], amplitudes[..., 1]
  quadrant = jnp.where(alpha == 0, 2,
                       jnp.where(beta == 0, 3,
                                 jnp.where(alpha * beta > 0, 0, 1)))
  row = (4 * bits.astype(jnp.int32) + 2 * best_bits.astype(jnp.int32)
         + better.astype(jnp.int32)[:, None])
  return delta_theta * jnp.asarray(ROTATION_TABLE)[row, quadrant]


def _local_migration(bits, fitness, group_size: int):
  """Every b replaced by the best b of its group of consecutive individuals."""
  population = fitness.shape[0]
  groups = -(-population // group_size)
  padded = jnp.pad(fitness, (0, groups * group_size - population),
                   constant_values=-jnp.inf).reshape(groups, group_size)
  winner = jnp.argmax(padded, axis=1) + group_size * jnp.arange(groups)
  source = jnp.repeat(winner, group_size)[:population]
  return bits[source], fitness[source]


@functools.partial(jax.jit, static_argnames=('config',))
def update(state: QieaState, bits, fitness,
           config: QieaConfig = QieaConfig()) -> QieaState:
  """One QIEA generation after evaluation: rotate, Hε, store, migrate.

  Args:
    state: the state `bits` were observed from.
    bits: observed solutions x, [P, n] in {0, 1} (any integer or bool dtype).
    fitness: f(x), [P], larger is better. A NaN (e.g. a diverged training
      run) never compares ≥, so it is never stored and rotates nothing.
    config: QieaConfig, static.

  Returns:
    The next QieaState, generation + 1.
  """
  bits = jnp.asarray(bits).astype(jnp.int8)
  fitness = jnp.asarray(fitness, jnp.float32)
  better = fitness >= state.best_fitness
  angles = rotation_angles(state.amplitudes, bits, state.best_bits, better,
                           config.delta_theta)
  amplitudes = qubits.apply(qubits.rotation(angles), state.amplitudes)
  amplitudes = qubits.h_epsilon(amplitudes, config.epsilon)

  best_bits = jnp.where(better[:, None], bits, state.best_bits)
  best_fitness = jnp.where(better, fitness, state.best_fitness)
  leader = jnp.argmax(best_fitness)
  new_leader = best_fitness[leader] >= state.global_fitness
  global_bits = jnp.where(new_leader, best_bits[leader], state.global_bits)
  global_fitness = jnp.where(new_leader, best_fitness[leader],
                             state.global_fitness)

  generation = state.generation + 1
  local_bits, local_fitness = _local_migration(best_bits, best_fitness,
                                               config.local_group_size)
  is_global = generation % config.global_period == 0
  best_bits = jnp.where(is_global, global_bits[None, :], local_bits)
  best_fitness = jnp.where(is_global, global_fitness, local_fitness)
  return QieaState(amplitudes, best_bits, best_fitness, generation,
                   global_bits, global_fitness)


@functools.partial(jax.jit, static_argnames=(
    'fitness_fn', 'num_qubits', 'population', 'generations', 'config'))
def maximise(key: jax.Array, fitness_fn: Callable[[jax.Array], jax.Array],
             num_qubits: int, population: int, generations: int,
             config: QieaConfig = QieaConfig()):
  """Runs QIEA for a fixed number of generations, all inside one jit.

  Costs population · generations fitness evaluations. Generation t observes
  with `fold_in(key, t)`, so a run is a pure function of its key.

  Args:
    key: PRNG key.
    fitness_fn: jittable, vectorised f(bits int8 [P, n]) -> [P]; static.
    num_qubits: bits per solution n.
    population: individuals P.
    generations: number of generations.
    config: QieaConfig.

  Returns:
    (best_bits int8 [n], best_fitness float32 scalar, curve float32
    [generations]): the best solution seen and, per generation, the best
    fitness seen so far.
  """
  def generation(state, t):
    bits = observe(jax.random.fold_in(key, t), state)
    state = update(state, bits, fitness_fn(bits), config)
    return state, state.global_fitness

  state, curve = jax.lax.scan(generation, init(population, num_qubits),
                              jnp.arange(generations))
  return state.global_bits, state.global_fitness, curve

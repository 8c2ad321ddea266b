"""An exact statevector for a few qubits, for bits that must be correlated.

The Q-bit registers of `qubits.py` are product states: their bits are
independent. Some groups of hyperparameter bits are not (e.g. two switches
that only make sense together); an entangled state of k qubits can express
any distribution over their 2**k outcomes. A Bell pair, H on qubit 0 then
CNOT(0 → 1), gives (|00⟩ + |11⟩)/√2: the two bits are always equal, each
uniform.

Representation: ψ is a complex64 vector of length 2**n, meant for n ≤ ~12
(memory and time are O(2**n)). **Bit order: qubit 0 is the most significant
bit** (big-endian, as in textbooks): amplitude ψ[i] belongs to the basis
state |q0 q1 … q_{n−1}⟩ with i = Σ_k q_k·2**(n−1−k), and `sample` returns
bits in the same order, column k holding qubit k.

Every function takes one state and static qubit indices, and is jitted with
those indices static; `jax.vmap` over a batch of states [B, 2**n] works
as-is (vmap the state, keep the gate or indices unbatched).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np


def _num_qubits(state) -> int:
  """n from the static length 2**n of the state."""
  n = int(np.log2(state.shape[-1]))
  if 2**n != state.shape[-1]:
    raise ValueError(f'state length {state.shape[-1]} is not a power of 2')
  return n


def _check_qubit(qubit: int, n: int) -> None:
  if not 0 <= qubit < n:
    raise ValueError(f'qubit {qubit} out of range for {n} qubits')


def zero_state(num_qubits: int) -> jax.Array:
  """|0…0⟩ on num_qubits qubits: complex64 [2**num_qubits], ψ[0] = 1."""
  state = np.zeros((2**num_qubits,), np.complex64)
  state[0] = 1
  return jnp.asarray(state)  # Built in NumPy: compiles nothing.


@functools.partial(jax.jit, static_argnames=('qubit',))
def apply_single(state, gate, qubit: int) -> jax.Array:
  """Applies a 2x2 gate U to one qubit: ψ ← (I ⊗ … ⊗ U ⊗ … ⊗ I) ψ.

  The state is viewed as a tensor with one axis of size 2 per qubit; U is
  contracted with the qubit's axis, O(2**n) work and no 2**n x 2**n matrix.

  Args:
    state: complex [2**n].
    gate: [2, 2], e.g. `qubits.HADAMARD`; a traced value is fine.
    qubit: index of the qubit (0 = most significant bit), static.

  Returns:
    complex64 [2**n], the new state.
  """
  n = _num_qubits(state)
  _check_qubit(qubit, n)
  tensor = state.reshape((2,) * n)
  gate = jnp.asarray(gate, jnp.complex64)
  out = jnp.tensordot(gate, tensor, axes=((1,), (qubit,)))  # New axis 0.
  return jnp.moveaxis(out, 0, qubit).reshape(-1).astype(jnp.complex64)


@functools.partial(jax.jit, static_argnames=('control', 'target'))
def cnot(state, control: int, target: int) -> jax.Array:
  """Controlled NOT: flips the target qubit where the control qubit is 1.

  |c, t⟩ ↦ |c, t ⊕ c⟩. On the tensor view it swaps the two target slices
  inside the control = 1 half, a permutation of amplitudes (so exactly
  unitary, no arithmetic).

  Args:
    state: complex [2**n].
    control: index of the control qubit, static.
    target: index of the target qubit, static; differs from control.

  Returns:
    complex64 [2**n], the new state.
  """
  n = _num_qubits(state)
  _check_qubit(control, n)
  _check_qubit(target, n)
  if control == target:
    raise ValueError('control and target must be different qubits')
  tensor = state.reshape((2,) * n)
  flipped = jnp.flip(tensor, axis=target)
  shape = [1] * n
  shape[control] = 2
  control_is_one = jnp.arange(2).reshape(shape) == 1
  return jnp.where(control_is_one, flipped, tensor).reshape(-1).astype(
      jnp.complex64)


@jax.jit
def probabilities(state) -> jax.Array:
  """Born rule: P(basis state i) = |ψ[i]|², float32 [2**n] summing to 1."""
  return (jnp.abs(state) ** 2).astype(jnp.float32)


@functools.partial(jax.jit, static_argnames=('shots',))
def sample(key: jax.Array, state, shots: int) -> jax.Array:
  """Measures the whole register `shots` times, independently.

  Each shot draws a basis index i with probability |ψ[i]|² and writes it
  as n bits, qubit 0 first (the most significant bit of i).

  Args:
    key: PRNG key.
    state: complex [2**n].
    shots: number of samples, static.

  Returns:
    int8 bits [shots, n]; row s is one outcome (q0, …, q_{n−1}).
  """
  n = _num_qubits(state)
  logits = jnp.log(probabilities(state))  # log 0 = −inf: never drawn.
  index = jax.random.categorical(key, logits, shape=(shots,))
  shifts = jnp.arange(n - 1, -1, -1)
  return ((index[:, None] >> shifts) & 1).astype(jnp.int8)

"""Q-bit registers of a whole population, and the gates that act on them.

A Q-bit is a pair of amplitudes (α, β) with |α|² + |β|² = 1: measuring it
gives 1 with probability |β|² and 0 with probability |α|² (Han & Kim 2002,
IEEE TEC 6(6)). A register of a population is an array of shape
[..., n, 2], leading axes for individuals, axis -2 for the n Q-bits, axis -1
for (α, β). Real float32 is the default (rotations keep amplitudes real);
gates such as Pauli Y make them complex, and every function here accepts both.

Qubits in a register are independent: the register is a product of n
single-qubit states, i.e. a factorised distribution over bitstrings (Platel,
Schliebs & Kasabov 2009, IEEE TEC 13(6), show QIEA is an estimation of
distribution algorithm in exactly this sense). Correlated bits need the
statevector simulator in `statevector.py`.

A gate is a 2x2 matrix U acting on (α, β) as a column vector; `apply` takes
one gate for everyone or a stack [..., n, 2, 2] giving every Q-bit of every
individual its own gate, and contracts them all in one einsum.
"""

import jax
import jax.numpy as jnp
import numpy as np

_SQRT_HALF = float(np.sqrt(0.5))

# Constants are NumPy, not jnp, so importing the module starts no backend.
HADAMARD = np.array([[1, 1], [1, -1]], np.float32) * np.float32(_SQRT_HALF)
PAULI_X = np.array([[0, 1], [1, 0]], np.float32)
PAULI_Y = np.array([[0, -1j], [1j, 0]], np.complex64)
PAULI_Z = np.array([[1, 0], [0, -1]], np.float32)


def uniform(population: int, num_qubits: int) -> jax.Array:
  """Every Q-bit of every individual in (|0⟩ + |1⟩)/√2.

  The initial state of QIEA (Han & Kim 2002): each of the 2**n
  bitstrings is equally likely.

  Args:
    population: number of individuals P.
    num_qubits: Q-bits per individual n.

  Returns:
    float32 amplitudes [P, n, 2], all equal to 1/√2.
  """
  # Built in NumPy: making a register compiles nothing.
  return jnp.asarray(np.full((population, num_qubits, 2), _SQRT_HALF,
                             np.float32))


def rotation(theta) -> jax.Array:
  """The rotation gate R(θ) = [[cos θ, −sin θ], [sin θ, cos θ]].

  It turns the point (α, β) on the unit circle by θ counter-clockwise, so in
  the first quadrant a positive θ raises P(1) = β². R(a)·R(b) = R(a + b).

  Args:
    theta: angle(s) in radians, any shape S; e.g. [P, n] gives every Q-bit
      of every individual its own angle.

  Returns:
    float32 gates [*S, 2, 2].
  """
  theta = jnp.asarray(theta, jnp.float32)
  c, s = jnp.cos(theta), jnp.sin(theta)
  return jnp.stack([jnp.stack([c, -s], -1), jnp.stack([s, c], -1)], -2)


def apply(gates, register) -> jax.Array:
  """U·(α, β)ᵀ for every Q-bit of the register at once.

  Args:
    gates: [2, 2] (the same gate everywhere) or [..., 2, 2] broadcasting
      against the register's leading axes [..., n].
    register: amplitudes [..., n, 2].

  Returns:
    The new amplitudes, [..., n, 2], in the promoted dtype (complex if either
    input is complex). A unitary gate keeps every norm at 1.
  """
  return jnp.einsum('...ij,...j->...i', gates, register)


def norms(register) -> jax.Array:
  """√(|α|² + |β|²) per Q-bit, [..., n]; 1 for a valid register."""
  return jnp.sqrt(jnp.sum(jnp.abs(register) ** 2, axis=-1))


def probability_of_one(register) -> jax.Array:
  """P(measure 1) = |β|² per Q-bit, float [..., n]."""
  return jnp.abs(register[..., 1]) ** 2


@jax.jit
def measure(key: jax.Array, register) -> jax.Array:
  """Observes every Q-bit once: bit ~ Bernoulli(|β|²), independently.

  This is QIEA's "observation" of Q(t) into P(t) (Han & Kim 2002): the
  register itself is not collapsed, so it can be observed again next
  generation; it is a sampler, not a destructive measurement.

  Args:
    key: PRNG key.
    register: amplitudes [..., n, 2].

  Returns:
    int8 bits [..., n].
  """
  return jax.random.bernoulli(key, probability_of_one(register)).astype(
      jnp.int8)


def _phase(z):
  """z/|z|, with 1 where z = 0 (so a zero amplitude gets a + sign)."""
  if not jnp.iscomplexobj(z):
    return jnp.where(z < 0, -1, 1).astype(z.dtype)
  magnitude = jnp.abs(z)
  safe = jnp.where(magnitude > 0, magnitude, 1)
  return jnp.where(magnitude > 0, z / safe, jnp.ones_like(z))


def h_epsilon(register, epsilon: float) -> jax.Array:
  """The Hε gate: keeps every P(1) = |β|² inside [ε, 1 − ε].

  Han & Kim (2004, IEEE TEC 8(2)): once a rotation pushes a Q-bit
  to within ε of |0⟩ or |1⟩, it is set back to exactly ε (or 1 − ε), so no
  bit ever freezes and the search keeps a floor of exploration, like a
  mutation rate of at least ε per bit. Q-bits already inside the band are
  left untouched. Here the signs (phases) of α and β are kept, so the
  quadrant, and with it the rotation direction of the next update, is
  unchanged; a zero amplitude counts as positive.

  Args:
    register: amplitudes [..., n, 2].
    epsilon: ε in [0, 0.5]; 0 makes the gate the identity.

  Returns:
    Amplitudes [..., n, 2], still of unit norm.
  """
  p1 = probability_of_one(register)
  clipped = jnp.clip(p1, epsilon, 1 - epsilon)
  alpha = _phase(register[..., 0]) * jnp.sqrt(1 - clipped)
  beta = _phase(register[..., 1]) * jnp.sqrt(clipped)
  moved = jnp.stack([alpha, beta], -1).astype(register.dtype)
  return jnp.where((clipped != p1)[..., None], moved, register)

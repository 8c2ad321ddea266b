"""Quantum-inspired search, simulated classically.

Nothing in this package runs on, or needs, quantum hardware: every amplitude
is an ordinary float (or complex) array in JAX, and every "measurement" is a
draw from `jax.random`. The quantum vocabulary describes the probabilistic
model the algorithms keep, and the maths they share with real qubits.

  qubits       Q-bit registers of a population ([..., n, 2] amplitudes),
               single-qubit gates, measurement and the Hε gate
  statevector  an exact 2**n statevector for a few entangled qubits
               (correlated bits, e.g. a Bell pair makes two bits equal)
  qiea         the quantum-inspired evolutionary algorithm of Han & Kim
               (2002): init / observe / update, and `maximise`
"""

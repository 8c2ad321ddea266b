"""Strategies of the matrix-factorisation (DP-MF) mechanisms, built on the host.

A correlated-noise mechanism releases the gradients x_t with noise C⁻¹z,
z ~ N(0, σ²·C_clip²·sens² I): the same as releasing C·x + z and
multiplying by C⁻¹, so its privacy is that of one Gaussian release of
sensitivity ‖C·(x − x')‖, and its noise on the running sums of updates
(what SGD applies) is A·C⁻¹z, A the lower-triangular matrix of ones. C is
lower-triangular Toeplitz, given by its first column c (c₀ = 1), so

  * C⁻¹ is Toeplitz too, with the inverse power series d of c;
  * the prefix-sum error is ‖A·C⁻¹‖²_F = Σ_k (n − k)·s_k², s = cumsum(d);
  * the reported RMSE, in units of σ·C_clip, is sens·‖A·C⁻¹‖_F / √n
    (√((n + 1) / 2) for independent noise, C = I).

Two families, both optimised for that prefix-sum workload over n steps:

  banded  c_k = 0 for k ≥ b (Choquette-Choo et al. 2023; banded Toeplitz as
          in McKenna 2024). With participations ≥ b steps apart two columns
          never overlap, so the sensitivity is the column norm ‖c‖ and each
          participation is its own Gaussian release: what lets cyclic
          Poisson sampling amplify it. The noise needs the last b − 1
          noise vectors: (b − 1) × parameters of state.
  blt     c_k = Σ_i ω_i θ_i^(k−1) for k ≥ 1 (buffered linear Toeplitz;
          Dvijotham, McMahan et al. 2024), d buffers of parameters' size,
          whatever n. ω_i > 0, Σω_i < 1 and 0 < θ_i < 1 keep c positive and
          non-increasing, and then the sensitivity under participations
          ≥ b steps apart is that of the earliest pattern 0, b, 2b, ...
          (tests/test_correlated_noise.py checks it against every pattern
          of small n). It is optimised for that multi-participation
          sensitivity.

Optimisation is L-BFGS (scipy) on the exact loss, differentiated by JAX in
float64; results are cached by (family, n, b, buffers).
"""

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from scipy import optimize
from scipy import special

from jaxdp.errors import ConfigError

KINDS = ('banded', 'blt')


@dataclasses.dataclass(frozen=True)
class Strategy:
  """C of one mechanism over `num_steps` steps (host values, float64)."""

  kind: str  # 'banded' | 'blt'
  num_steps: int
  # Participations of one example are at least this many steps apart (the
  # cyclic sampler's number of groups); a banded C has this many bands.
  min_separation: int
  coefficients: tuple  # c₀ .. c_(n−1) of C's first column; c₀ = 1.
  omega: tuple = ()  # BLT only: ω_i and θ_i of c_k = Σ ω_i θ_i^(k−1).
  theta: tuple = ()

  @property
  def bands(self) -> int:
    return len(self.coefficients) if self.kind == 'banded' else 0

  @property
  def buffers(self) -> int:
    """Parameter-sized arrays the streaming noise keeps."""
    return self.bands - 1 if self.kind == 'banded' else len(self.omega)

  @functools.cached_property
  def column(self) -> np.ndarray:
    """c₀ .. c_(n−1): C's first column (every column is a shift of it)."""
    c = np.zeros(self.num_steps)
    head = np.asarray(self.coefficients, np.float64)[:self.num_steps]
    c[:len(head)] = head
    if self.kind == 'blt':
      c[1:] = blt_column(np.asarray(self.omega), np.asarray(self.theta),
                         self.num_steps)[1:]
    return c

  @functools.cached_property
  def inverse_column(self) -> np.ndarray:
    """d: C⁻¹'s first column, the noise the streaming recursion adds."""
    return np.asarray(_inverse_impulse(self), np.float64)

  @property
  def max_column_norm(self) -> float:
    """‖c‖ over the n steps: one participation's sensitivity."""
    return float(np.linalg.norm(self.column))

  @functools.cached_property
  def sensitivity(self) -> float:
    """max ‖C·Δ‖ over contributions of norm ≤ 1 at steps ≥ b apart."""
    if self.kind == 'banded':
      return self.max_column_norm  # Columns b apart never overlap.
    return earliest_pattern_sensitivity(self.column, self.min_separation)

  @property
  def rmse(self) -> float:
    """RMSE of the noise on the n running sums, in units of σ·C_clip."""
    s = np.cumsum(self.inverse_column)
    n = self.num_steps
    return self.sensitivity * math.sqrt(
        float(np.sum((n - np.arange(n)) * s ** 2)) / n)

  @property
  def is_identity(self) -> bool:
    return self.kind == 'banded' and len(self.coefficients) == 1

  def to_json(self) -> dict:
    """What a resume must find unchanged (the noise it continues)."""
    return {'kind': self.kind, 'steps': self.num_steps,
            'min_separation': self.min_separation,
            'coefficients': [float(v) for v in self.coefficients],
            'omega': [float(v) for v in self.omega],
            'theta': [float(v) for v in self.theta]}


def identity_rmse(num_steps: int) -> float:
  """RMSE of independent noise (DP-SGD) on n prefix sums: √((n+1)/2)."""
  return math.sqrt((num_steps + 1) / 2)


def blt_column(omega, theta, n: int) -> np.ndarray:
  """c₀ = 1, c_k = Σ_i ω_i θ_i^(k−1): a BLT strategy's first column."""
  k = np.arange(1, n)
  c = np.ones(n)
  c[1:] = (np.asarray(omega)[None, :] *
           np.asarray(theta)[None, :] ** (k[:, None] - 1)).sum(axis=1)
  return c


def earliest_pattern_sensitivity(column: np.ndarray, separation: int) -> float:
  """‖C·(e₀ + e_b + e_2b + ...)‖ for Toeplitz C of first column `column`.

  For a positive, non-increasing column this is the sensitivity under
  participations ≥ b apart (the earliest, densest pattern is the worst).
  """
  n = len(column)
  rows = -(-n // separation)
  padded = np.zeros(rows * separation)
  padded[:n] = column
  # Row t = q·b + r of C·comb is Σ_{j ≤ q} c_(j·b + r).
  v = np.cumsum(padded.reshape(rows, separation), axis=0).reshape(-1)[:n]
  return float(np.linalg.norm(v))


def pattern_increment_bound(strategy: Strategy) -> float:
  """Δ ≥ the growth of sens² from one more participation at any step, any
  earlier pattern (BLT, c positive and non-increasing, infinite horizon):

    Δ = Σ_i c_i² + 2 Σ_{j≥1} Σ_i c_i c_(i+jb),

  since ⟨col_s, col_t⟩ ≤ Σ_i c_i c_(i+|s−t|), non-increasing in |s − t|,
  and the j-th earlier participation is ≥ j·b steps away. Closed form for
  c_k = Σ ω θ^(k−1): Σ_i c_i c_(i+m) = c_m + Σ_{a,a'} ω_a ω_a' θ_a'^m /
  (1 − θ_a θ_a').
  """
  omega, theta = np.asarray(strategy.omega), np.asarray(strategy.theta)
  b = strategy.min_separation
  cross = omega[:, None] * omega[None, :] / (1 - theta[:, None] *
                                             theta[None, :])
  norm2 = 1 + float(np.sum(cross))  # m = 0: c₀² + Σ_{i≥1} c_i².
  # Σ_{j≥1} c_(jb) and Σ_{j≥1} θ^(jb), geometric in j.
  tail_c = float(np.sum(omega * theta ** (b - 1) / (1 - theta ** b)))
  tail_theta = theta ** b / (1 - theta ** b)
  overlaps = tail_c + float(np.sum(cross * tail_theta[None, :]))
  return norm2 + 2 * overlaps


# --- The optimisation (float64 JAX on the host). --------------------------

def _prefix_loss(inverse: jax.Array) -> jax.Array:
  """‖A·C⁻¹‖²_F / n from C⁻¹'s first column."""
  n = inverse.shape[0]
  s = jnp.cumsum(inverse)
  return jnp.sum((n - jnp.arange(n)) * s ** 2) / n


def _banded_inverse(c: jax.Array, n: int) -> jax.Array:
  """C⁻¹e₀ for banded Toeplitz c: d_k = [k=0] − Σ_{j≥1} c_j d_(k−j)."""
  tail = c[1:]

  def one(recent, impulse):
    d = impulse - jnp.dot(tail, recent)
    return jnp.concatenate([d[None], recent[:-1]]), d

  start = jnp.zeros(tail.shape[0], c.dtype)
  impulses = jnp.zeros(n, c.dtype).at[0].set(1.0)
  if tail.shape[0] == 0:
    return impulses
  return jax.lax.scan(one, start, impulses)[1]


def _blt_inverse(omega: jax.Array, theta: jax.Array, n: int) -> jax.Array:
  """C⁻¹e₀ by the streaming recursion: w = z − ω·u, u ← θ·u + w."""
  def one(u, impulse):
    w = impulse - jnp.dot(omega, u)
    return theta * u + w, w
  impulses = jnp.zeros(n, omega.dtype).at[0].set(1.0)
  return jax.lax.scan(one, jnp.zeros_like(omega), impulses)[1]


def _inverse_impulse(strategy: Strategy) -> np.ndarray:
  with jax.enable_x64(True):
    n = strategy.num_steps
    if strategy.kind == 'banded':
      out = _banded_inverse(jnp.asarray(strategy.coefficients, jnp.float64),
                            n)
    else:
      out = _blt_inverse(jnp.asarray(strategy.omega, jnp.float64),
                         jnp.asarray(strategy.theta, jnp.float64), n)
    return np.asarray(out)


def _minimise(loss, start: np.ndarray) -> np.ndarray:
  """L-BFGS on log(loss), float64, gradients by JAX."""
  with jax.enable_x64(True):
    value_and_grad = jax.jit(jax.value_and_grad(lambda x: jnp.log(loss(x))))

    def fun(x):
      value, grad = value_and_grad(jnp.asarray(x, jnp.float64))
      return float(value), np.asarray(grad, np.float64)

    result = optimize.minimize(fun, start, jac=True, method='L-BFGS-B',
                               options={'maxiter': 500})
    best = result.x if np.isfinite(result.fun) else start
    return np.asarray(best, np.float64)


def _banded_loss(n: int):
  def loss(tail):
    c = jnp.concatenate([jnp.ones(1, tail.dtype), tail])
    return jnp.sum(c ** 2) * _prefix_loss(_banded_inverse(c, n))
  return loss


def _blt_params(x):
  d = x.shape[0] // 2
  # ω_i > 0 with Σω < 1, θ_i in (0, 1): c positive and non-increasing.
  omega = jax.nn.sigmoid(x[-1]) * jax.nn.softmax(x[:d])
  theta = jax.nn.sigmoid(x[d:2 * d])
  return omega, theta


def _blt_loss(n: int, separation: int):
  rows = -(-n // separation)

  def loss(x):
    omega, theta = _blt_params(x)
    k = jnp.arange(1, n)
    c = jnp.concatenate([jnp.ones(1, x.dtype),
                         jnp.sum(omega * theta ** (k[:, None] - 1), axis=1)])
    padded = jnp.zeros(rows * separation, x.dtype).at[:n].set(c)
    v = jnp.cumsum(padded.reshape(rows, separation), axis=0).reshape(-1)[:n]
    return jnp.sum(v ** 2) * _prefix_loss(_blt_inverse(omega, theta, n))
  return loss


def _check(num_steps: int, min_separation: int) -> None:
  if not (isinstance(num_steps, int) and num_steps >= 1):
    raise ConfigError('train.num_steps', f'must be >= 1, got {num_steps!r}',
                      'set a positive number of steps')
  if not (isinstance(min_separation, int) and min_separation >= 1):
    raise ConfigError('dp.mf_bands', f'must be an integer >= 1, got '
                      f'{min_separation!r}', 'set dp.mf_bands=1 (DP-SGD) or '
                      'more bands, at most the steps per epoch')


def _as_float32(values) -> np.ndarray:
  """`values` rounded to float32: the coefficients the streaming noise runs
  with, so the sensitivity and RMSE are those of the C that runs."""
  return np.asarray(values, np.float32).astype(np.float64)


@functools.lru_cache(maxsize=64)
def banded(num_steps: int, bands: int) -> Strategy:
  """The b-banded Toeplitz strategy minimising the prefix-sum RMSE.

  b = 1 is the identity: DP-SGD's independent noise.
  """
  _check(num_steps, bands)
  b = min(bands, num_steps)
  if b == 1:
    return Strategy('banded', num_steps, bands, (1.0,))
  # Start from the first b coefficients of √A (the optimal full-matrix
  # strategy's square-root factorisation): binom(2j, j) / 4^j.
  j = np.arange(1, b)
  start = special.comb(2 * j, j) / 4.0 ** j
  tail = _as_float32(_minimise(_banded_loss(num_steps), start))
  return Strategy('banded', num_steps, bands, (1.0, *map(float, tail)))


@functools.lru_cache(maxsize=64)
def blt(num_steps: int, min_separation: int, buffers: int) -> Strategy:
  """The BLT strategy with `buffers` buffers minimising the prefix-sum RMSE
  at its sensitivity under participations ≥ `min_separation` apart."""
  _check(num_steps, min_separation)
  if not (isinstance(buffers, int) and buffers >= 1):
    raise ConfigError('dp.mf_buffers', f'must be an integer >= 1, got '
                      f'{buffers!r}', 'set a few buffers, e.g. '
                      'dp.mf_buffers=4')
  # A few starts (L-BFGS finds local minima here): θ from fast to slow
  # decay over different spans of the horizon, equal ω summing to 0.6.
  loss = _blt_loss(num_steps, min_separation)
  best, best_loss = None, math.inf
  for shortest, span in ((2.0, 1.0), (2.0, 0.25), (float(min_separation),
                                                      1.0)):
    longest = max(2 * shortest, span * float(num_steps))
    theta = 1 - 1 / np.geomspace(shortest, longest, buffers)
    start = np.concatenate([np.zeros(buffers), special.logit(theta),
                            [special.logit(0.6)]])
    x = _minimise(loss, start)
    with jax.enable_x64(True):
      value = float(loss(jnp.asarray(x)))
    if value < best_loss:
      best, best_loss = x, value
  x = best
  with jax.enable_x64(True):
    omega, theta = (np.asarray(v, np.float64) for v in
                    _blt_params(jnp.asarray(x)))
  omega, theta = _as_float32(omega), _as_float32(theta)
  return Strategy('blt', num_steps, min_separation, (1.0,),
                  tuple(map(float, omega)), tuple(map(float, theta)))


def strategy(kind: str, num_steps: int, min_separation: int,
             buffers: int = 4) -> Strategy:
  """The cached strategy of `kind` (one of KINDS)."""
  if kind == 'banded':
    return banded(num_steps, min_separation)
  if kind == 'blt':
    return blt(num_steps, min_separation, buffers)
  raise ValueError(f'unknown strategy kind {kind!r}; use one of {KINDS}')

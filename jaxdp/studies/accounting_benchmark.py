"""Times accounting a noise schedule: vectorised RDP against dp-accounting.

A per-step schedule has a distinct σ at every step; dp-accounting's
`RdpAccountant` evaluates each step on its own. `jaxdp.accounting.sampled_gaussian_rdp`
computes all steps at once. Both are timed on the same schedule (cosine
from σ_start to σ_end, q fixed), and their ε are compared: exactly, with the
same integer orders, and against dp-accounting's default orders. dp-accounting
is timed on the first `reference_steps` steps (the whole schedule would take
it minutes) and extrapolated linearly, which the table says.
"""

import time

import dp_accounting
from dp_accounting import rdp

from jaxdp.accounting import sampled_gaussian_rdp as sgm
from jaxdp.noise.schedules import NoiseSchedule


def _best_of(repeats: int, fn):
  times, out = [], None
  for _ in range(repeats):
    begin = time.perf_counter()
    out = fn()
    times.append(time.perf_counter() - begin)
  return min(times), out


def _dp_accounting(q, sigmas, delta, orders=None):
  accountant = (rdp.RdpAccountant() if orders is None
                else rdp.RdpAccountant(orders=list(orders)))
  for s in sigmas:
    accountant.compose(dp_accounting.PoissonSampledDpEvent(
        q, dp_accounting.GaussianDpEvent(float(s))))
  return accountant.get_epsilon(delta)


def run(num_steps: int = 10_000, reference_steps: int = 200, q: float = 0.01,
        start: float = 1.5, end: float = 0.9, delta: float = 1e-5) -> dict:
  """Timings (seconds) and ε of both ways; JSON-ready."""
  # A cosine schedule with one piece per step, and the same in 10 pieces.
  sigmas = start * NoiseSchedule('cosine', end / start,
                                 num_steps).step_factors(num_steps)
  pieces = start * NoiseSchedule('cosine', end / start,
                                 10).step_factors(num_steps)
  fast = lambda s: sgm.epsilon(sgm.composed_rdp(q, s), delta)[0]
  ours_s, ours_eps = _best_of(3, lambda: fast(sigmas))
  head = sigmas[:reference_steps]
  ours_head_s, ours_head = _best_of(3, lambda: fast(head))
  ref_s, same_orders = _best_of(1, lambda: _dp_accounting(q, head, delta,
                                                          sgm.ORDERS))
  _, default_orders = _best_of(1, lambda: _dp_accounting(q, head, delta))
  grouped_s, grouped_eps = _best_of(3, lambda: fast(pieces))
  return {
      'num_steps': num_steps, 'q': q, 'sigma_start': start,
      'sigma_end': end, 'delta': delta,
      'vectorised_seconds': ours_s, 'vectorised_epsilon': ours_eps,
      'reference_steps': reference_steps,
      'vectorised_seconds_reference': ours_head_s,
      'dp_accounting_seconds_reference': ref_s,
      'dp_accounting_seconds_extrapolated': ref_s * num_steps
                                            / reference_steps,
      'epsilon_reference_vectorised': ours_head,
      'epsilon_reference_dp_accounting_same_orders': same_orders,
      'epsilon_reference_dp_accounting_default_orders': default_orders,
      'ten_pieces_seconds': grouped_s, 'ten_pieces_epsilon': grouped_eps,
  }


def table(r: dict) -> str:
  n, m = r['num_steps'], r['reference_steps']
  return '\n'.join([
      '| what | steps | seconds | ε |', '|---|---|---|---|',
      f'| vectorised RDP, a distinct σ per step | {n} | '
      f'{r["vectorised_seconds"]:.3f} | {r["vectorised_epsilon"]:.4f} |',
      f'| vectorised RDP, 10 constant pieces | {n} | '
      f'{r["ten_pieces_seconds"]:.4f} | {r["ten_pieces_epsilon"]:.4f} |',
      f'| vectorised RDP, first steps | {m} | '
      f'{r["vectorised_seconds_reference"]:.4f} | '
      f'{r["epsilon_reference_vectorised"]:.6f} |',
      f'| dp-accounting RDP, same integer orders | {m} | '
      f'{r["dp_accounting_seconds_reference"]:.2f} (×{n // m} ≈ '
      f'{r["dp_accounting_seconds_extrapolated"]:.0f} s for {n}) | '
      f'{r["epsilon_reference_dp_accounting_same_orders"]:.6f} |',
      f'| dp-accounting RDP, its default orders | {m} | — | '
      f'{r["epsilon_reference_dp_accounting_default_orders"]:.6f} |'])

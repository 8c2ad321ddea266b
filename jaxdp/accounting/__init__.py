"""Privacy accounting with dp-accounting: ε for a DpEvent, and σ calibration.

Three accountants are offered:

* ``pld`` (default): privacy loss distributions, the tightest numerical
  accountant in dp-accounting (Koskela et al. 2020, Doroshenko et al. 2022).
* ``rdp``: Rényi DP with the improved RDP → (ε, δ) conversion of
  Balle et al. 2020 / Canonne et al. 2020 (what dp-accounting returns).
* ``rdp_classic``: Rényi DP with the conversion of Mironov 2017, Prop. 3,
  ε = min_α RDP(α) + log(1/δ)/(α − 1). This is what Abadi et al. 2016's moments
  accountant, early TF Privacy and early Opacus reported, so use it to match
  the numbers of older papers. It is never smaller than ``rdp``.

All three are upper bounds on the true ε of the mechanism they are given; they
differ in tightness only.
"""

import contextlib
import functools
import logging
import math
from typing import Callable, Optional

import dp_accounting
from dp_accounting import pld
from dp_accounting import rdp
import numpy as np

from jaxdp.accounting.cyclic import CyclicDpEvent
from jaxdp.accounting.cyclic import participations
from jaxdp.errors import ConfigError

ACCOUNTANTS = ('pld', 'rdp', 'rdp_classic')

NeighboringRelation = dp_accounting.NeighboringRelation

# PLD discretisation of the privacy loss. 1e-4 is dp-accounting's default; the
# ε it reports is a valid upper bound for any interval, smaller is tighter.
_PLD_VALUE_DISCRETIZATION = 1e-4


def _classic_epsilon(orders, rdp_values, target_delta: float):
  """(ε, order) of Mironov 2017, Prop. 3: min over α of RDP(α) + log(1/δ)/(α−1)."""
  if not 0 < target_delta < 1:
    raise ValueError(f'target_delta must be in (0, 1), got {target_delta}.')
  with np.errstate(invalid='ignore', divide='ignore'):
    eps = rdp_values + math.log(1.0 / target_delta) / (orders - 1.0)
  eps = np.where(orders > 1.0, eps, np.inf)
  best = int(np.argmin(eps))
  return max(0.0, float(eps[best])), float(orders[best])


class ClassicRdpAccountant(rdp.RdpAccountant):
  """An RDP accountant that converts to (ε, δ) with Mironov 2017, Prop. 3."""

  def get_epsilon_and_optimal_order(self, target_delta: float):
    return _classic_epsilon(self.orders, self.rdp, target_delta)

  def get_epsilon(self, target_delta: float) -> float:
    return self.get_epsilon_and_optimal_order(target_delta)[0]


def make_accountant(
    name: str, neighboring_relation: NeighboringRelation
) -> dp_accounting.PrivacyAccountant:
  """A fresh, empty accountant of the given kind."""
  if name == 'pld':
    return pld.PLDAccountant(
        neighboring_relation=neighboring_relation,
        value_discretization_interval=_PLD_VALUE_DISCRETIZATION,
    )
  if name == 'rdp':
    return rdp.RdpAccountant(neighboring_relation=neighboring_relation)
  if name == 'rdp_classic':
    return ClassicRdpAccountant(neighboring_relation=neighboring_relation)
  raise ConfigError(
      'dp.accountant', f'unknown accountant {name!r}',
      f'use one of {", ".join(ACCOUNTANTS)}')


def per_participation(event: dp_accounting.DpEvent) -> dp_accounting.DpEvent:
  """What one participation releases: `event`, or a cyclic step's inner one."""
  return event.event if isinstance(event, CyclicDpEvent) else event


def self_composed(event: dp_accounting.DpEvent,
                  count: int) -> dp_accounting.DpEvent:
  """`count` consecutive steps of `event`, as dp-accounting composes them: a
  cyclic step's run of `count` is ⌈count / period⌉ participations."""
  if isinstance(event, CyclicDpEvent):
    return dp_accounting.SelfComposedDpEvent(
        event.event, participations(count, event.period))
  return dp_accounting.SelfComposedDpEvent(event, count)


def check_supported(
    name: str, neighboring_relation: NeighboringRelation,
    event: dp_accounting.DpEvent) -> None:
  """Raises ConfigError if the accountant cannot account for `event`."""
  event = per_participation(event)
  if not make_accountant(name, neighboring_relation).supports(event):
    raise ConfigError(
        'dp.accountant',
        f'the {name!r} accountant in dp-accounting cannot account for '
        f'{type(event).__name__} events of this sampler',
        'use the rdp or rdp_classic accountant with the fixed_size sampler, '
        'or the poisson sampler with any accountant')


def epsilon(
    name: str, neighboring_relation: NeighboringRelation,
    event: dp_accounting.DpEvent, delta: float) -> float:
  """ε at `delta` of everything `event` describes."""
  accountant = make_accountant(name, neighboring_relation)
  with quiet_rdp_probes():
    accountant.compose(event)
    return float(accountant.get_epsilon(delta))


class _DropRdpSeriesWarnings(logging.Filter):
  """Drops dp-accounting's warning that an RDP order's series diverged.

  For small σ (calibration probes many) the series of fractional orders near 1
  does not converge; dp-accounting then leaves those orders out, which is
  sound (ε is a minimum over orders), and warns once per order and call.
  """

  def filter(self, record: logging.LogRecord) -> bool:
    return '_compute_log_a_frac failed to converge' not in record.getMessage()


@contextlib.contextmanager
def quiet_rdp_probes():
  logger, quiet = logging.getLogger('absl'), _DropRdpSeriesWarnings()
  logger.addFilter(quiet)
  try:
    yield
  finally:
    logger.removeFilter(quiet)


def epsilon_after(
    name: str, neighboring_relation: NeighboringRelation,
    step_event: dp_accounting.DpEvent, delta: float,
    setup_event: Optional[dp_accounting.DpEvent] = None
) -> Callable[[int], float]:
  """k -> ε at `delta` of `setup_event` (if any), then k `step_event`s.

  Equal, bit for bit, to `epsilon(..., SelfComposedDpEvent(step_event, k),
  ...)` (composed after `setup_event`), and 0 for k = 0 without a setup event.
  RDP composes by adding RDP vectors, so for the RDP accountants one step's
  vector is computed once and scaled by k (microseconds per k instead of up
  to a second); PLD is computed once per k and remembered.
  """
  return epsilon_after_pieces(name, neighboring_relation, [(1, step_event)],
                              delta, setup_event)


def first_steps(pieces, k: int) -> list:
  """[(count, event)] of the first k steps of a schedule of `pieces`.

  `pieces` is [(count, one step's event)] in order; the last piece's event
  continues past its count (steps beyond the planned ones).
  """
  out, left = [], int(k)
  for i, (count, event) in enumerate(pieces):
    take = left if i == len(pieces) - 1 else min(count, left)
    if take > 0:
      out.append((take, event))
    left -= take
  return out


def schedule_event(pieces, k: int,
                   setup_event: Optional[dp_accounting.DpEvent] = None
                   ) -> Optional[dp_accounting.DpEvent]:
  """The DpEvent of the setup release and the first k steps of `pieces`."""
  events = [] if setup_event is None else [setup_event]
  # A cyclic piece is one run of its event, so ⌈count / period⌉ holds.
  events += [self_composed(event, count)
             for count, event in first_steps(pieces, k)]
  if not events:
    return None
  return events[0] if len(events) == 1 else dp_accounting.ComposedDpEvent(
      events)


def epsilon_after_pieces(
    name: str, neighboring_relation: NeighboringRelation, pieces,
    delta: float, setup_event: Optional[dp_accounting.DpEvent] = None
) -> Callable[[int], float]:
  """k -> ε of the setup release, then the first k steps of `pieces`.

  `pieces` is [(count, one step's DpEvent)] (see `first_steps`): a noise
  schedule's piecewise-constant steps, or one piece for a constant σ. For
  the RDP accountants each piece's one-step RDP vector is computed once and
  weighted by its count; PLD composes the pieces once per k and remembers.
  """
  if name == 'pld':
    @functools.lru_cache(maxsize=None)
    def pld_epsilon(k: int) -> float:
      event = schedule_event(pieces, k, setup_event)
      return 0.0 if event is None else epsilon(name, neighboring_relation,
                                               event, delta)
    return lambda k: pld_epsilon(int(k))

  def rdp_vector(event):
    accountant = make_accountant(name, neighboring_relation)
    with quiet_rdp_probes():
      accountant.compose(event)
    return accountant.rdp

  orders = make_accountant(name, neighboring_relation).orders
  per_step = [rdp_vector(per_participation(event)) for _, event in pieces]
  setup = 0.0 if setup_event is None else rdp_vector(setup_event)
  convert = (_classic_epsilon if name == 'rdp_classic'
             else rdp.rdp_privacy_accountant.compute_epsilon)
  # first_steps over piece indices: which pieces, and how many steps each.
  indexed = [(count, i) for i, (count, _) in enumerate(pieces)]

  def rdp_epsilon(k: int) -> float:
    if k == 0:  # 0 × an infinite order's RDP would be NaN, not 0.
      return 0.0 if setup_event is None else float(
          convert(orders, setup, delta)[0])
    total = setup
    for count, index in first_steps(indexed, k):
      event = pieces[index][1]
      if isinstance(event, CyclicDpEvent):
        count = participations(count, event.period)
      total = count * per_step[index] + total
    return float(convert(orders, total, delta)[0])
  return rdp_epsilon


def _search_sigma(accountant_factory, make_event, target_epsilon, delta,
                  bracket, tolerance) -> float:
  with quiet_rdp_probes():
    return float(dp_accounting.calibrate_dp_mechanism(
        accountant_factory, make_event, target_epsilon, delta,
        bracket_interval=bracket, tol=tolerance))


def calibrate_noise_multiplier(
    name: str,
    neighboring_relation: NeighboringRelation,
    make_event: Callable[[float], dp_accounting.DpEvent],
    target_epsilon: float,
    delta: float,
    tolerance: float = 1e-3,
) -> float:
  """The smallest σ (within `tolerance`) whose ε at `delta` is ≤ target.

  dp-accounting's calibration guarantees the returned σ meets the target for
  the accountant it searched with; the σ returned here is always checked with
  the accountant that reports ε, so the run's budget holds.

  For PLD, the search is bracketed by RDP's σ (RDP is fast and never tighter)
  and first runs on a 10× coarser discretisation (10× faster), then is refined
  at full resolution in a narrow bracket.

  Args:
    name: accountant name, one of ACCOUNTANTS.
    neighboring_relation: the relation the sampler's event is defined under.
    make_event: maps a noise multiplier σ to the DpEvent of the whole run.
    target_epsilon: the ε to meet.
    delta: the δ at which ε is measured.
    tolerance: absolute tolerance on σ.

  Returns:
    σ with epsilon(name, ..., make_event(σ), delta) ≤ target_epsilon.
  """
  eps = lambda s: epsilon(name, neighboring_relation, make_event(s), delta)
  bracket = dp_accounting.LowerEndpointAndGuess(0.0, 1.0)
  if name != 'pld':
    sigma = _search_sigma(lambda: make_accountant(name, neighboring_relation),
                          make_event, target_epsilon, delta, bracket,
                          tolerance)
  else:
    upper = calibrate_noise_multiplier('rdp', neighboring_relation,
                                       make_event, target_epsilon, delta,
                                       tolerance)
    coarse = lambda: pld.PLDAccountant(
        neighboring_relation=neighboring_relation,
        value_discretization_interval=10 * _PLD_VALUE_DISCRETIZATION)
    bracket = dp_accounting.ExplicitBracketInterval(0.25 * upper, upper)
    try:
      sigma = _search_sigma(coarse, make_event, target_epsilon, delta,
                            bracket, tolerance)
    except ValueError:  # RDP's σ did not bracket (never seen): search blind.
      sigma = upper
    # Refine at full resolution just below the coarse σ (which, being
    # pessimistic, is slightly too large), or search wide if it fell short.
    fine = lambda: make_accountant(name, neighboring_relation)
    if eps(sigma) <= target_epsilon < eps(0.97 * sigma):
      bracket = dp_accounting.ExplicitBracketInterval(0.97 * sigma, sigma)
    else:
      bracket = dp_accounting.ExplicitBracketInterval(0.25 * upper, 2 * upper)
    sigma = _search_sigma(fine, make_event, target_epsilon, delta, bracket,
                          tolerance / 10)
  achieved = eps(sigma)
  if achieved > target_epsilon:  # Never observed; refuse rather than overspend.
    raise RuntimeError(
        f'calibration returned σ={sigma} with ε={achieved} > {target_epsilon}')
  return sigma

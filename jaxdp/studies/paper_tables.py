"""Rows of published DP results, and how each paper accounted for them.

A paper's config file (`configs/<paper>.py`) declares `ROWS`, a dict of
`PaperRow`s, and `get_config(row)`, the jaxdp config that reproduces a row.
This module holds what the paper *reported* and recomputes its ε (or σ) the
way the paper did, which may differ from how jaxdp accounts for its own run:

* the RDP orders the paper's accountant used (Abadi et al. 2016's moments
  accountant used integer orders up to 32; Tramèr & Boneh 2021 used Opacus's
  1.1–10.9 and 12–63);
* the RDP → (ε, δ) conversion (`rdp_classic`, Mironov 2017, for the older
  papers; dp-accounting's improved one for `rdp`);
* Gaussian releases made once before training whose cost the paper added to
  the budget (DP-PCA in Abadi et al.; noisy normalisation statistics in
  Tramèr & Boneh), as (σ, count) pairs of full-data Gaussian mechanisms.

Host-side NumPy and dp-accounting only: `--accounting_only` runs in seconds.
"""

import dataclasses
import functools
import math
from typing import Optional

import dp_accounting
from dp_accounting import rdp
import numpy as np

from jaxdp import accounting
from jaxdp.accounting import budget

# Opacus's default RDP orders, which Tramèr & Boneh 2021's code used.
OPACUS_ORDERS = tuple([1 + x / 10.0 for x in range(1, 100)] +
                      list(range(12, 64)))
# The moments accountant of Abadi et al. 2016: integer orders up to 32.
MOMENTS_ORDERS = tuple(range(2, 33))
# Where the searches for the steps a σ affords give up.
_MAX_STEPS = 10**7


@dataclasses.dataclass(frozen=True)
class PaperRow:
  """One reported result and the privacy settings the paper gives for it.

  Attributes:
    dataset: data.name of the row.
    accuracy: the paper's test accuracy, in percent.
    epsilon: the paper's ε.
    delta: the paper's δ.
    num_examples: N, training examples the paper accounted for.
    batch_size: expected batch (lot) size B; q = B / N.
    steps: the paper's number of steps (None where it does not say).
    noise_multiplier: the paper's σ (None where it does not say; then
      `paper_epsilon` calibrates it to `epsilon`).
    accountant: `rdp_classic` or `rdp`, the paper's conversion.
    orders: RDP orders of the paper's accountant (None: dp-accounting's).
    releases: ((σ, count), ...) full-data Gaussian releases, of sensitivity
      1 relative to σ, that the paper composed with training.
    notes: where jaxdp's run differs from the paper, and where the numbers
      come from.
  """

  dataset: str
  accuracy: float
  epsilon: float
  delta: float
  num_examples: int
  batch_size: int
  steps: Optional[int]
  noise_multiplier: Optional[float]
  accountant: str = 'rdp_classic'
  orders: Optional[tuple] = None
  releases: tuple = ()
  notes: str = ''


def _paper_rdp(row: PaperRow, sigma: float, steps: int):
  """(orders, RDP vector) of the row's training plus releases."""
  accountant = (rdp.RdpAccountant(orders=list(row.orders)) if row.orders
                else rdp.RdpAccountant())
  q = row.batch_size / row.num_examples
  with accounting.quiet_rdp_probes():
    if steps:  # dp-accounting refuses a count of 0.
      accountant.compose(dp_accounting.PoissonSampledDpEvent(
          q, dp_accounting.GaussianDpEvent(sigma)), steps)
    for release_sigma, count in row.releases:
      accountant.compose(dp_accounting.GaussianDpEvent(release_sigma), count)
  return np.asarray(accountant.orders, float), np.asarray(accountant.rdp)


def paper_epsilon(row: PaperRow, sigma: float, steps: int) -> float:
  """ε of `steps` steps at σ (plus the row's releases), as the paper counts."""
  if steps == 0 and not row.releases:
    return 0.0
  orders, rdp_values = _paper_rdp(row, sigma, steps)
  if row.accountant == 'rdp_classic':
    with np.errstate(invalid='ignore', divide='ignore'):
      eps = rdp_values + math.log(1 / row.delta) / (orders - 1)
    return float(np.min(np.where(orders > 1, eps, np.inf)))
  return float(rdp.rdp_privacy_accountant.compute_epsilon(
      orders, rdp_values, row.delta)[0])


def paper_sigma(row: PaperRow, steps: int) -> float:
  """The smallest σ (to 1e-3) whose paper-style ε after `steps` is ≤ ε."""
  lo, hi = 0.1, 1.0
  while paper_epsilon(row, hi, steps) > row.epsilon:
    lo, hi = hi, 2 * hi
  while hi - lo > 1e-3:
    mid = (lo + hi) / 2
    lo, hi = (lo, mid) if paper_epsilon(row, mid, steps) <= row.epsilon else (
        mid, hi)
  return hi


def last_affordable_step(accountant: str, sampling_probability: float,
                         sigma: float, delta: float, target_epsilon: float,
                         setup_event: Optional[dp_accounting.DpEvent] = None
                         ) -> int:
  """The most Poisson-sampled steps at σ whose jaxdp ε stays ≤ the target.

  `setup_event` is a release before training, composed in. Used by configs
  whose paper gives σ and ε but not the number of steps.
  """
  eps = accounting.epsilon_after(
      accountant, dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE,
      dp_accounting.PoissonSampledDpEvent(
          sampling_probability, dp_accounting.GaussianDpEvent(sigma)), delta,
      setup_event)
  return budget.last_step_within(eps, target_epsilon, 1, _MAX_STEPS)


def paper_steps(row: PaperRow, sigma: float) -> int:
  """The most steps at σ whose paper-style ε stays ≤ the row's ε."""
  return budget.last_step_within(lambda k: paper_epsilon(row, sigma, k),
                                 row.epsilon, 1, _MAX_STEPS)


@functools.lru_cache(maxsize=None)  # Rows are frozen; configs ask again.
def paper_accounting(row: PaperRow) -> dict:
  """The row's (σ, steps, ε) as the paper's accountant gives them.

  Whatever the paper states is used as stated; one missing quantity is
  derived from the others (`derived` names it): σ calibrated to the paper's ε,
  or the steps its σ affords. With neither σ nor steps, nothing is derived.
  """
  sigma, steps, derived = row.noise_multiplier, row.steps, None
  if sigma is None and steps is None:
    return {'sigma': None, 'steps': None, 'epsilon': None, 'derived': None}
  if sigma is None:
    sigma, derived = paper_sigma(row, steps), 'sigma'
  elif steps is None:
    steps, derived = paper_steps(row, sigma), 'steps'
  return {'sigma': sigma, 'steps': steps,
          'epsilon': paper_epsilon(row, sigma, steps), 'derived': derived}

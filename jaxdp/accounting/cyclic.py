"""A step of a cyclic participation schedule, as a DpEvent the ledger keeps.

Under cyclic sampling the examples are split into b fixed groups, and step t
may only use group t mod b: an example takes part in at most one step of any
b consecutive ones. A correlated-noise mechanism whose participations
compose as independent releases (banded matrix factorisation with b bands,
Choquette-Choo et al. 2023, Thm. 4) then spends, over m consecutive steps of
this event, at most ⌈m / b⌉ compositions of `event` (the group that took
part first is the worst case). The same holds for the continuation of a BLT
run past its planned steps, whose extra participations are bounded one by
one (`jaxdp.noise.correlated`).

dp-accounting has no such event, so `jaxdp.accounting` turns every run of
consecutive `CyclicDpEvent`s into the self-composition of its inner event
before an accountant sees it (`self_composed`); the accountants never
receive this type.
"""

import math

import attr
import dp_accounting


@attr.s(frozen=True, slots=True, auto_attribs=True)
class CyclicDpEvent(dp_accounting.DpEvent):
  """One step of a cycle of `period` steps in which each example takes part
  at most once; `event` is what one participation releases."""

  event: dp_accounting.DpEvent
  period: int


def participations(count: int, period: int) -> int:
  """The most times one example takes part in `count` consecutive steps."""
  return int(math.ceil(int(count) / int(period)))

"""What a run has spent: its DpEvents, as JSON, and the ε they add up to.

A run's privacy history is a list of segments, each `count` executions of one
step's DpEvent. It is written into every checkpoint and the privacy ledger, so
it must survive a round trip through JSON exactly; `event_to_json` and
`event_from_json` do that for any dp-accounting event built from attrs fields.

ε is always computed from the *merged* history: consecutive segments with the
same event become one self-composition. The numerical accountants (PLD) give
slightly different bounds for `compose(e, 10); compose(e, 10)` than for
`compose(e, 20)`, so without merging, the ε of a run would depend on how often
it was checkpointed or resumed.
"""

import dataclasses
from typing import Iterable, Optional

import attr
import dp_accounting

from jaxdp import accounting
from jaxdp.accounting import cyclic


def event_to_json(event: dp_accounting.DpEvent) -> dict:
  """A JSON-ready dict that `event_from_json` turns back into `event`."""
  out = {'type': type(event).__name__}
  for field in attr.fields(type(event)):
    value = getattr(event, field.name)
    if isinstance(value, dp_accounting.DpEvent):
      value = event_to_json(value)
    elif isinstance(value, (list, tuple)):
      value = [event_to_json(v) if isinstance(v, dp_accounting.DpEvent) else v
               for v in value]
    out[field.name] = value
  return out


# Events of jaxdp's own, never handed to an accountant as they are.
_JAXDP_EVENTS = {'CyclicDpEvent': cyclic.CyclicDpEvent}


def event_from_json(data: dict) -> dp_accounting.DpEvent:
  """The DpEvent that `event_to_json` described; ValueError if it is not one."""
  if not isinstance(data, dict) or 'type' not in data:
    raise ValueError(f'not a serialised DpEvent: {data!r}')
  cls = getattr(dp_accounting, data['type'], None) or _JAXDP_EVENTS.get(
      data['type'])
  if not (isinstance(cls, type) and issubclass(cls, dp_accounting.DpEvent)):
    raise ValueError(f'unknown DpEvent type {data["type"]!r}')
  kwargs = {}
  for key, value in data.items():
    if key == 'type':
      continue
    if isinstance(value, dict):
      value = event_from_json(value)
    elif isinstance(value, list):
      value = [event_from_json(v) if isinstance(v, dict) else v
               for v in value]
    kwargs[key] = value
  return cls(**kwargs)


@dataclasses.dataclass(frozen=True)
class Segment:
  """`count` consecutive executions of the same one-step DpEvent."""

  event: dict  # event_to_json of one step's DpEvent.
  count: int

  def to_json(self) -> dict:
    return {'event': self.event, 'count': self.count}

  @classmethod
  def from_json(cls, data: dict) -> 'Segment':
    count = data['count']
    if not (isinstance(count, int) and count >= 1):
      raise ValueError(f'segment count must be an integer >= 1, got {count!r}')
    event_from_json(data['event'])  # Validates.
    return cls(event=data['event'], count=count)


def merged(segments: Iterable[Segment]) -> list:
  """Consecutive segments of the same event joined."""
  out = []
  for segment in segments:
    if out and out[-1].event == segment.event:
      out[-1] = Segment(segment.event, out[-1].count + segment.count)
    else:
      out.append(segment)
  return out


def executions(segments: Iterable[Segment]) -> int:
  """How many steps the history holds."""
  return sum(s.count for s in segments)


def epsilon(segments: Iterable[Segment], accountant: str,
            neighboring_relation: dp_accounting.NeighboringRelation,
            delta: float, setup: Optional[dict] = None) -> float:
  """ε at `delta` of the setup release (JSON, if any) and every execution.

  0 for no execution and no setup release.
  """
  parts = merged(segments)
  events = [] if setup is None else [event_from_json(setup)]
  events += [accounting.self_composed(event_from_json(s.event), s.count)
             for s in parts]
  if not events:
    return 0.0
  event = events[0] if len(events) == 1 else dp_accounting.ComposedDpEvent(
      events)
  return accounting.epsilon(accountant, neighboring_relation, event, delta)

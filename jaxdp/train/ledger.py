"""The privacy ledger: an append-only, hash-chained record of what a run spent.

`<workdir>/privacy_ledger.jsonl` holds one JSON object per line:

    {"index": i, "kind": ..., "data": {...}, "prev": h_{i-1}, "hash": h_i}

with h_i = SHA-256(h_{i-1} ‖ canonical JSON of {index, kind, data, prev}) and
h_{-1} = 64 zeros. Canonical JSON is sorted keys, no spaces, UTF-8. Editing,
deleting, inserting or reordering any line breaks the chain at that line.

Kinds written by the trainer:
* ``run_start``: config hash, code version, dataset fingerprint, the privacy
  settings and the target.
* ``resume``: a restart from a checkpoint.
* ``segment``: executions of one step's DpEvent since the last segment
  (`first` is the index of the first execution, `count` how many), with the ε of
  everything executed so far.
* ``checkpoint``, ``rollback``, ``budget_stop``, ``final``: what they say.

`verify` checks the chain, checks that segments are contiguous, and re-runs the
accountant from the logged events: every recorded ε must be what the events
give. A hash chain cannot by itself reveal lines cut from the *end*; the latest
checkpoint records the ledger's length and head hash, and `verify` checks them.
"""

import dataclasses
import hashlib
import json
import math
import os
from typing import Optional

import dp_accounting

from jaxdp.accounting import history as event_history
from jaxdp import private_releases
from jaxdp.private_releases import UNKNOWN as _UNKNOWN

FILENAME = 'privacy_ledger.jsonl'
GENESIS = '0' * 64

# Recorded and recomputed ε must agree to this relative precision; the same
# accountant on the same events gives the same float, this only absorbs
# printing.
_EPSILON_RTOL = 1e-9


def canonical_json(value) -> str:
  return json.dumps(value, sort_keys=True, separators=(',', ':'),
                    ensure_ascii=False, allow_nan=False)


def entry_hash(prev: str, body: dict) -> str:
  payload = prev + canonical_json(body)
  return hashlib.sha256(payload.encode('utf-8')).hexdigest()


class LedgerError(ValueError):
  """The ledger file is not a valid chain; `line` is 1-based."""

  def __init__(self, line: int, problem: str):
    self.line = line
    self.problem = problem
    super().__init__(f'line {line}: {problem}')


def _parse(path: str) -> list:
  """The entries of the file at `path`, each checked against the chain."""
  entries = []
  prev = GENESIS
  with open(path, encoding='utf-8') as f:
    lines = f.read().splitlines(keepends=True)
  torn = bool(lines) and not lines[-1].endswith('\n')
  for number, line in enumerate(lines, start=1):
    try:
      entry = json.loads(line)
    except json.JSONDecodeError as e:
      if torn and number == len(lines):
        raise LedgerError(number, 'the last line is incomplete: a write cut '
                          'short (by a crash or a full disk), or a cut '
                          'file') from e
      raise LedgerError(number, f'not valid JSON ({e.msg})') from e
    if not isinstance(entry, dict) or set(entry) != {
        'index', 'kind', 'data', 'prev', 'hash'}:
      raise LedgerError(number, 'not a ledger entry (expected the keys '
                        'index, kind, data, prev, hash)')
    if entry['index'] != number - 1:
      raise LedgerError(number, f'index {entry["index"]!r} where {number - 1} '
                        'was expected: an entry was deleted, inserted or moved')
    if entry['prev'] != prev:
      raise LedgerError(number, 'does not chain to the line before it: an '
                        'entry was deleted, inserted or moved')
    body = {k: entry[k] for k in ('index', 'kind', 'data', 'prev')}
    if entry_hash(prev, body) != entry['hash']:
      raise LedgerError(number, 'its hash does not match its content: the '
                        'entry was edited')
    prev = entry['hash']
    entries.append(entry)
  return entries


class Ledger:
  """Appends entries to a workdir's ledger, continuing its chain."""

  def __init__(self, workdir: str, write: bool = True):
    """Reads `workdir`'s ledger; `write=False` keeps new entries in memory.

    (On several hosts only host 0 writes; the others keep the same chain.)
    """
    self.path = os.path.join(workdir, FILENAME)
    self._write = write
    self.entries = _parse(self.path) if os.path.exists(self.path) else []
    # Kept as a running count: the training loop asks before every step.
    self._executions = sum(e['data']['count'] for e in self.entries
                           if e['kind'] == 'segment')

  @property
  def head(self) -> str:
    return self.entries[-1]['hash'] if self.entries else GENESIS

  def append(self, kind: str, data: dict) -> dict:
    body = {'index': len(self.entries), 'kind': kind, 'data': data,
            'prev': self.head}
    entry = dict(body, hash=entry_hash(self.head, body))
    if self._write:
      os.makedirs(os.path.dirname(self.path), exist_ok=True)
      with open(self.path, 'a', encoding='utf-8') as f:
        f.write(canonical_json(entry) + '\n')
        f.flush()
        os.fsync(f.fileno())
    self.entries.append(entry)
    if kind == 'segment':
      self._executions += data['count']
    return entry

  def executions(self) -> int:
    """Executions recorded in segments so far."""
    return self._executions



@dataclasses.dataclass
class Report:
  entries: int
  executions: int
  epsilon: Optional[float]
  delta: Optional[float]
  head: str


def _close(recorded, computed: float) -> bool:
  if recorded is None:  # JSON has no inf: a non-private run records null.
    return math.isinf(computed)
  return math.isclose(recorded, computed, rel_tol=_EPSILON_RTOL,
                      abs_tol=1e-12)


def _matches_pieces(segment: dict, pieces: list) -> bool:
  """Whether executions first .. first + count − 1 of `segment` all have
  its event in the planned `pieces`."""
  try:
    first, count = int(segment['first']), int(segment['count'])
  except (KeyError, TypeError, ValueError):
    return False
  start = 0
  try:
    pieces = [(int(size), event) for size, event in pieces]
  except (TypeError, ValueError):
    return False  # A malformed run_start: no segment can match it.
  for i, (size, event) in enumerate(pieces):
    end = math.inf if i == len(pieces) - 1 else start + size
    if start <= first < end:
      return segment.get('event') == event and first + count <= end
    start = end
  return False


@dataclasses.dataclass
class _Replay:
  """What `verify` has read so far: the run's accounting and its segments."""

  accountant: Optional[str] = None
  relation: Optional[dp_accounting.NeighboringRelation] = None
  delta: Optional[float] = None
  pieces: Optional[list] = None  # [(count, event)] the run planned.
  setup: Optional[dict] = None  # The release before step 1, if any.
  segments: list = dataclasses.field(default_factory=list)
  epsilon: float = 0.0  # What the segments so far give.


def _check_run_start(replay: _Replay, number: int, kind: str,
                     data: dict) -> None:
  """A run_start: the run's settings, its planned events and its release."""
  # A start that failed before its first step may be followed by another.
  if replay.segments:
    raise LedgerError(number, 'a second run_start after steps were '
                      'executed')
  try:
    settings = data['privacy']
    relation = dp_accounting.NeighboringRelation[
        settings['neighboring_relation'].upper()]
    accountant, delta = settings['accountant'], settings['delta']
    step_event = data['step_event']
    # [(count, event)] of the planned steps (a noise schedule's pieces;
    # the last one continues past the plan). Older ledgers: one event.
    pieces = data.get('step_pieces', [[1, step_event]])
    # Releases before step 1, if any. A later run_start (a start that
    # failed before its first checkpoint, so nothing derived from its
    # release was kept) replaces an earlier one's.
    setup = data.get('setup_event')
    if setup is not None:
      event_history.event_from_json(setup)
    expected = private_releases.setup_event_json(settings)
  except (KeyError, TypeError, AttributeError) as e:
    raise LedgerError(number, f'run_start lacks {e}') from e
  except ValueError as e:
    raise LedgerError(number, f'bad setup_event ({e})') from e
  if expected is not _UNKNOWN and expected != setup:
    raise LedgerError(number, 'its setup_event is not the release its '
                      'privacy settings ask for')
  replay.accountant, replay.relation, replay.delta = accountant, relation, delta
  replay.pieces, replay.setup = pieces, setup
  replay.epsilon = event_history.epsilon([], accountant, relation, delta,
                                         setup)
  _check_entry(replay, number, kind, data)


def _check_segment(replay: _Replay, number: int, kind: str,
                   data: dict) -> None:
  """A segment: the planned event, contiguous, and the ε its events give."""
  del kind
  done = event_history.executions(replay.segments)
  if not _matches_pieces(data, replay.pieces):
    raise LedgerError(number, 'its DpEvent is not the step event the run '
                      'planned for those executions')
  try:
    segment = event_history.Segment.from_json(data)
  except (KeyError, TypeError, ValueError) as e:
    raise LedgerError(number, f'bad segment ({e})') from e
  if data.get('first') != done:
    raise LedgerError(number, f'segment starts at execution '
                      f'{data.get("first")!r}, but {done} were recorded '
                      'before it')
  replay.segments.append(segment)
  replay.epsilon = event_history.epsilon(
      replay.segments, replay.accountant, replay.relation, replay.delta,
      replay.setup)
  if not _close(data.get('epsilon', math.nan), replay.epsilon):
    raise LedgerError(number, f'records ε={data.get("epsilon")!r}, but '
                      f'its events give ε={replay.epsilon!r}')


def _check_entry(replay: _Replay, number: int, kind, data: dict,
                 exact: bool = False) -> None:
  """Any other entry: no more executions (`exact`: exactly as many) and the
  same ε as the segments before it."""
  done = event_history.executions(replay.segments)
  if 'executed' in data and (
      data['executed'] > done or (exact and data['executed'] != done)):
    raise LedgerError(number, f'{kind} records {data["executed"]} '
                      f'executions, but the segments before it hold {done}')
  if 'epsilon' in data:  # Before any segment: the release's ε, or 0.
    if not _close(data['epsilon'], replay.epsilon):
      raise LedgerError(number, f'{kind} records ε={data["epsilon"]!r}, but '
                        f'the segments before it give ε={replay.epsilon!r}')


def _check_final(replay: _Replay, number: int, kind: str, data: dict) -> None:
  """The final entry: every execution the segments hold, no more, no less."""
  _check_entry(replay, number, kind, data, exact=True)


# The checks of each kind of entry; any other kind gets `_check_entry`.
_CHECKS = {'run_start': _check_run_start, 'segment': _check_segment,
           'final': _check_final}


def _check_anchor(entries: list, anchor: dict) -> None:
  """The ledger holds the entry the latest checkpoint recorded."""
  n = anchor['entries']
  if n > len(entries):
    raise LedgerError(len(entries) + 1, f'the latest checkpoint was written '
                      f'after entry {n}, but the ledger ends at entry '
                      f'{len(entries)}: entries were cut from the end')
  if entries[n - 1]['hash'] != anchor['head']:
    raise LedgerError(n, 'differs from the entry the latest checkpoint '
                      'recorded')


def verify(path: str, anchor: Optional[dict] = None) -> Report:
  """Checks the ledger at `path`; raises LedgerError at the first bad line.

  Args:
    path: the ledger file.
    anchor: optionally {'entries': n, 'head': hash} recorded elsewhere (the
      latest checkpoint): the ledger must contain that entry.

  Returns:
    A Report of the verified ledger.
  """
  entries = _parse(path)
  if not entries:
    raise LedgerError(1, 'the ledger is empty')
  if entries[0]['kind'] != 'run_start':
    raise LedgerError(1, f'the first entry is {entries[0]["kind"]!r}, not '
                      'run_start')
  replay = _Replay()
  for number, entry in enumerate(entries, start=1):
    kind = entry['kind']
    # (A kind that is no string, hashable or not, gets the common checks.)
    check = _CHECKS.get(kind, _check_entry) if isinstance(kind, str) else (
        _check_entry)
    try:
      check(replay, number, kind, entry['data'])
    except LedgerError:
      raise
    except (TypeError, KeyError, AttributeError, ValueError) as e:
      # A re-chained ledger with fields of the wrong shape: damaged, not a
      # crash of the verifier.
      raise LedgerError(number, f'a malformed {kind!r} entry ('
                        f'{type(e).__name__}: {e})') from e
  if anchor is not None:
    _check_anchor(entries, anchor)
  return Report(entries=len(entries),
                executions=event_history.executions(replay.segments),
                epsilon=None if math.isinf(replay.epsilon) else replay.epsilon,
                delta=replay.delta, head=entries[-1]['hash'])


def verify_workdir(workdir: str) -> dict:
  """`verify` on a workdir's ledger, anchored by its newest checkpoint."""
  from jaxdp.train import checkpointing  # Heavy (orbax); only the CLI needs it.
  path = os.path.join(workdir, FILENAME)
  if not os.path.exists(path):
    raise FileNotFoundError(f'there is no {FILENAME} in {workdir} (is it a '
                            'jaxdp workdir?)')
  anchor = None
  checkpoints = os.path.join(workdir, checkpointing.DIRNAME)
  if os.path.isdir(checkpoints):
    checkpointer = checkpointing.Checkpointer(workdir, keep=None)
    latest = checkpointer.latest()
    if latest is not None:
      anchor = checkpointer.read_meta(latest)['ledger']
  report = verify(path, anchor)
  return dataclasses.asdict(report)

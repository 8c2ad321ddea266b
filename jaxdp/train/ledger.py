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
  segments = []
  epsilon = 0.0
  for number, entry in enumerate(entries, start=1):
    data = entry['data']
    if entry['kind'] == 'run_start':
      # A start that failed before its first step may be followed by another.
      if segments:
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
      epsilon = event_history.epsilon([], accountant, relation, delta, setup)
    done = event_history.executions(segments)
    if entry['kind'] == 'segment' and not _matches_pieces(data, pieces):
      raise LedgerError(number, 'its DpEvent is not the step event the run '
                        'planned for those executions')
    if entry['kind'] != 'segment' and 'executed' in data and (
        data['executed'] > done
        or (entry['kind'] == 'final' and data['executed'] != done)):
      raise LedgerError(number, f'{entry["kind"]} records '
                        f'{data["executed"]} executions, but the segments '
                        f'before it hold {done}')
    if entry['kind'] == 'segment':
      try:
        segment = event_history.Segment.from_json(data)
      except (KeyError, TypeError, ValueError) as e:
        raise LedgerError(number, f'bad segment ({e})') from e
      if data.get('first') != done:
        raise LedgerError(number, f'segment starts at execution '
                          f'{data.get("first")!r}, but {done} were recorded '
                          'before it')
      segments.append(segment)
      epsilon = event_history.epsilon(segments, accountant, relation, delta,
                                      setup)
      if not _close(data.get('epsilon', math.nan), epsilon):
        raise LedgerError(number, f'records ε={data.get("epsilon")!r}, but '
                          f'its events give ε={epsilon!r}')
    elif 'epsilon' in data:  # Before any segment: the release's ε, or 0.
      if not _close(data['epsilon'], epsilon):
        raise LedgerError(number, f'{entry["kind"]} records '
                          f'ε={data["epsilon"]!r}, but the segments before it '
                          f'give ε={epsilon!r}')
  if anchor is not None:
    n = anchor['entries']
    if n > len(entries):
      raise LedgerError(len(entries) + 1, f'the latest checkpoint was written '
                        f'after entry {n}, but the ledger ends at entry '
                        f'{len(entries)}: entries were cut from the end')
    if entries[n - 1]['hash'] != anchor['head']:
      raise LedgerError(n, 'differs from the entry the latest checkpoint '
                        'recorded')
  return Report(entries=len(entries),
                executions=event_history.executions(segments),
                epsilon=None if math.isinf(epsilon) else epsilon, delta=delta,
                head=entries[-1]['hash'])


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

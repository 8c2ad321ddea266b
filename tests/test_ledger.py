"""The privacy ledger: every kind of tampering is caught, with its line."""

import json
import os
import shutil
import subprocess
import sys

import dp_accounting
import pytest

import run_configs
from jaxdp.accounting import history as event_history
from jaxdp.train import ledger
from jaxdp.train import train_and_evaluate

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  """A short run with several segments and checkpoints."""
  workdir = tmp_path_factory.mktemp('ledgered')
  config = run_configs.fixed_sigma_config(12, eval__every_steps=4)
  results = train_and_evaluate(config, str(workdir), log=lambda line: None)
  return workdir, results


def _tampered(run, tmp_path, edit):
  """A copy of the run's workdir whose ledger lines went through `edit`."""
  workdir = tmp_path / 'copy'
  shutil.copytree(run[0], workdir)
  path = workdir / ledger.FILENAME
  lines = path.read_text().splitlines()
  path.write_text('\n'.join(edit(lines)) + '\n')
  return workdir


def _bump_count(lines):
  entries = [json.loads(line) for line in lines]
  first = next(i for i, e in enumerate(entries) if e['kind'] == 'segment')
  entries[first]['data']['count'] -= 1  # Claim one step less was spent.
  for entry in entries[first + 1:]:  # And keep every later count in line.
    if entry['kind'] != 'segment' and 'executed' in entry['data']:
      entry['data']['executed'] -= 1
  return entries


def test_an_untouched_ledger_verifies_and_matches_the_results(run):
  workdir, results = run
  report = ledger.verify_workdir(str(workdir))
  assert report['epsilon'] == results['epsilon']
  assert report['executions'] == results['executed_steps'] == 12
  assert report['head'] == results['ledger_head']
  kinds = [e['kind'] for e in ledger.Ledger(str(workdir)).entries]
  assert kinds[0] == 'run_start' and kinds[-1] == 'final'
  assert kinds.count('segment') == 3 and kinds.count('checkpoint') == 4


def _line_of_first(lines, kind):
  return next(i for i, line in enumerate(lines, 1)
              if json.loads(line)['kind'] == kind)


@pytest.mark.parametrize('name, edit, line, words', [
    ('edited', lambda ls: [ls[0], ls[1], ls[2].replace('"count":4',
                                                      '"count":3'), *ls[3:]],
     3, 'edited'),
    ('deleted', lambda ls: ls[:3] + ls[4:], 4, 'deleted'),
    ('inserted', lambda ls: ls[:2] + [ls[2]] + ls[2:], 4, 'inserted'),
    ('reordered', lambda ls: ls[:2] + [ls[3], ls[2]] + ls[4:], 3, 'moved'),
    ('garbled', lambda ls: ls[:5] + ['{not json'] + ls[6:], 6, 'JSON'),
    ('rehashed after an edit', lambda ls: run_configs.rehash_ledger(_bump_count(ls)), 3,
     'its events give'),
    ('cut from the end', lambda ls: ls[:4], 5, 'cut from the end'),
])
def test_each_kind_of_tampering_is_reported_with_its_line(run, tmp_path, name,
                                                          edit, line, words):
  del name
  workdir = _tampered(run, tmp_path, edit)
  with pytest.raises(ledger.LedgerError) as error:
    ledger.verify_workdir(str(workdir))
  assert error.value.line == line, str(error.value)
  assert words in str(error.value)


def test_a_fully_forged_chain_disagrees_with_the_checkpoint(run, tmp_path):
  """A forger who rewrites counts, ε and hashes is caught by the anchor."""
  def forge(lines):
    entries = _bump_count(lines)
    segments = [e for e in entries if e['kind'] == 'segment']
    # Shift later segments and restate every ε so the accountant agrees.
    settings = entries[0]['data']['privacy']
    relation = dp_accounting.NeighboringRelation[
        settings['neighboring_relation'].upper()]
    done, history = 0, []
    for segment in segments:
      segment['data']['first'] = done
      history.append(event_history.Segment.from_json(segment['data']))
      done += segment['data']['count']
      segment['data']['epsilon'] = event_history.epsilon(
          history, settings['accountant'], relation, settings['delta'])
    eps = segments[-1]['data']['epsilon']
    for e in entries:
      if e['kind'] != 'segment' and 'epsilon' in e['data']:
        e['data']['epsilon'] = eps
    return run_configs.rehash_ledger(entries)
  workdir = _tampered(run, tmp_path, forge)
  with pytest.raises(ledger.LedgerError, match='latest checkpoint recorded'):
    ledger.verify_workdir(str(workdir))


@pytest.mark.parametrize('field,value', [('count', 'many'), ('first', None),
                                         ('event', [1, 2]), ('epsilon', {})])
def test_a_rechained_entry_of_the_wrong_shape_is_reported_not_a_crash(
    run, tmp_path, field, value):
  def malform(lines):
    entries = [json.loads(line) for line in lines]
    segment = next(e for e in entries if e['kind'] == 'segment')
    segment['data'][field] = value
    return run_configs.rehash_ledger(entries)
  workdir = _tampered(run, tmp_path, malform)
  with pytest.raises(ledger.LedgerError, match='line'):
    ledger.verify_workdir(str(workdir))


def test_the_cli_exits_non_zero_and_names_the_line(run, tmp_path):
  workdir = _tampered(run, tmp_path, lambda ls: ls[:3] + ls[4:])
  out = subprocess.run([sys.executable, '-m', 'experiments.ledger', 'verify',
                        str(workdir)], cwd=_ROOT, capture_output=True,
                       text=True, timeout=300)
  assert out.returncode == 1
  assert 'line 4' in out.stderr and 'Traceback' not in out.stderr
  good = subprocess.run([sys.executable, '-m', 'experiments.ledger', 'verify',
                         str(run[0])], cwd=_ROOT, capture_output=True,
                        text=True, timeout=300)
  assert good.returncode == 0, good.stderr
  assert json.loads(good.stdout.strip().splitlines()[-1])['executions'] == 12

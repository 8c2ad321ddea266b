"""The README's commands are the ones CI and users actually run."""

import os
import re

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _read(*parts):
  with open(os.path.join(_ROOT, *parts), encoding='utf-8') as f:
    return f.read()


def _quickstart_lines():
  readme = _read('README.md')
  block = re.search(r'## Quickstart.*?```(?:bash|sh)?\n(.*?)```', readme,
                    re.S).group(1)
  return [line for line in block.splitlines() if line.strip()]


def test_quickstart_is_exactly_two_command_lines():
  lines = _quickstart_lines()
  assert len(lines) == 2
  assert lines[0].startswith('pip install -e . && python -m experiments.train')
  assert 'pytest' in lines[1]


def test_ci_runs_the_readme_test_command_verbatim():
  test_line = _quickstart_lines()[1]
  ci_lines = [line.strip() for line in _read('.ci', 'run').splitlines()]
  assert test_line in ci_lines

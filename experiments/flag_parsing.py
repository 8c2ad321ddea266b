"""absl flag parsing with one-line errors, shared by the entry points."""

import re
import sys

from absl import flags
from absl import logging


def parse_flags(argv):
  """absl's parser, with a one-line error instead of a traceback."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:  # Also a config value of the wrong type.
    print(f'error: {e} Fix: see --helpfull for the flags', file=sys.stderr)
  except (AttributeError, KeyError) as e:  # A key the locked config lacks.
    words = re.findall(r'[A-Za-z_][A-Za-z0-9_.]*', str(e))
    guess = re.search(r'Did you mean "([^"]+)"', str(e))
    hint = f' (did you mean {guess.group(1)!r}?)' if guess else ''
    print(f'error: config: no field named {words[0] if words else str(e)!r}'
          f'{hint}. Fix: use a field declared in configs/base.py; the config is '
          'locked so that a misspelt setting cannot be silently ignored',
          file=sys.stderr)
  sys.exit(2)


def quiet_logs() -> None:
  """Library warnings only (absl's INFO lines off), unless --verbosity."""
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)

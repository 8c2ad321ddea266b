"""Secret Sharer exposure of planted canaries, without and with DP.

  python -m experiments.exposure --config=configs/tiny_lm_exposure.py \
      --workdir=/tmp/jaxdp_exposure

Trains the config non-privately, privately, and privately per user (same
data, same steps) in <workdir>/non_private, <workdir>/dp and
<workdir>/dp_user, then prints one markdown table of every canary's exposure
under each model (also <workdir>/exposure.md and exposure.json). Rerunning
resumes the trainings (finished ones are reported again, not rerun).
"""

import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from experiments.flag_parsing import parse_flags
from experiments.flag_parsing import quiet_logs
from jaxdp.errors import ConfigError
from jaxdp.lm import memorisation

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'A language-model config, e.g. '
    'configs/tiny_lm_exposure.py.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory of both runs.')
flags.mark_flags_as_required(['config', 'workdir'])
_CANDIDATES = flags.DEFINE_integer(
    'num_candidates', 1000, 'Random secrets each canary is ranked against.')
_USER_LENGTH = flags.DEFINE_integer(
    'user_max_length', 320, 'Tokens of a user\'s packed row in the third, '
    'user-level DP run (0: no such run).')


def main(argv):
  del argv
  quiet_logs()
  try:
    results = memorisation.run(_CONFIG.value, _WORKDIR.value,
                               _CANDIDATES.value, _USER_LENGTH.value,
                               log=lambda line: print(line, flush=True))
  except ConfigError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  print(memorisation.markdown(results), flush=True)


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)

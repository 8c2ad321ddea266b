"""Audits a DP training configuration: canaries in, attack, lower bound on ε.

  python -m experiments.audit --config=configs/audit.py --workdir=/tmp/audit \\
      --mode=one_run --canaries=1000 [--canary_type=gradient] \\
      [--mutation=none]

Prints the claimed ε, the ε lower bound with its confidence, what the audit
could certify at most, the AUC and TPR at FPR 0.1% and 1% beside what the
claimed guarantee allows; writes <workdir>/audit.{json,md} and
<workdir>/audit_roc.png. The last line printed is one JSON object. Exit
status 0, or 2 for bad input.

--mutation breaks the implementation on purpose (jaxdp/audit/mutations.py):
only this command can do that, never a training config.
"""

import json
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from experiments.flag_parsing import parse_flags
from experiments.flag_parsing import quiet_logs
from jaxdp.audit import canaries
from jaxdp.audit import modes
from jaxdp.audit import mutations
from jaxdp.audit import report
from jaxdp.audit import run
from jaxdp.errors import ConfigError

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'An image-classification config, e.g. configs/audit.py.',
    lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Where the outputs go.')
flags.mark_flags_as_required(['config', 'workdir'])
_MODE = flags.DEFINE_enum(
    'mode', 'one_run', modes.MODES, 'one_run: m canaries in one training '
    '(Steinke et al. 2023); multi_run: one canary in each of --canaries '
    'runs (Clopper-Pearson); lira: --shadow_models runs, LiRA.')
_CANARIES = flags.DEFINE_integer(
    'canaries', 1000, 'Canaries per run (one_run, lira), or runs (multi_run).')
_TYPE = flags.DEFINE_enum('canary_type', 'gradient', canaries.CANARY_KINDS,
                          'gradient (white-box), mislabelled or ood '
                          '(black-box).')
_MUTATION = flags.DEFINE_enum('mutation', 'none', mutations.MUTATIONS,
                              'A deliberate bug to audit (none: the real '
                              'implementation).')
_SHADOWS = flags.DEFINE_integer('shadow_models', 16, 'lira: models trained.')
_CONFIDENCE = flags.DEFINE_float('confidence', 0.95,
                                 'Confidence of the lower bound.')


def main(argv):
  del argv
  quiet_logs()
  settings = run.AuditSettings(
      mode=_MODE.value, canaries=_CANARIES.value, canary_type=_TYPE.value,
      mutation=_MUTATION.value, shadow_models=_SHADOWS.value,
      confidence=_CONFIDENCE.value)
  try:
    audit = run.run_audit(_CONFIG.value, settings,
                          log=lambda line: print(line, flush=True))
  except ConfigError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  line = report.summary(audit)
  paths = report.write(_WORKDIR.value, line, audit)
  print(report.table(line))
  print(f'ROC plot: {paths["audit_roc.png"]}')
  print(json.dumps(line), flush=True)


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)

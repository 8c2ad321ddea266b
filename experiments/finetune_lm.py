"""Fine-tunes a causal LM on conversations with DP, or samples from it.

  python -m experiments.finetune_lm --config=configs/smollm2_lora.py \
      --workdir=/tmp/jaxdp_smollm2 --config.train.num_steps=4

  python -m experiments.finetune_lm --config=configs/smollm2_lora.py \
      --workdir=/tmp/jaxdp_smollm2 --mode=generate \
      --prompt="My card was stolen. Please block it. I am Ada Berg."

`--mode=train` (default) is `experiments.train` for a config with
task=language_model: progress lines, held-out loss and next-token accuracy on
the assistant tokens, ε spent, resume on rerun, and one JSON line at the end.
`--mode=generate` loads the same pretrained model, adds the newest
checkpoint's adapters from the workdir (or none, with an empty workdir) and
prints the assistant's answer to each --prompt. The exit statuses are those
of experiments.train.
"""

import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from experiments.flag_parsing import parse_flags
from experiments.flag_parsing import quiet_logs
from jaxdp.errors import ConfigError
from jaxdp.lm import answers
from jaxdp.train import EXIT_STATUS
from jaxdp.train import final_line
from jaxdp.train import train_and_evaluate

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Path to a language-model config, e.g. '
    'configs/smollm2_lora.py.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory of the run.')
flags.mark_flags_as_required(['config', 'workdir'])
_MODE = flags.DEFINE_enum('mode', 'train', ['train', 'generate'],
                          'train, or generate from the trained adapters.')
_PROMPT = flags.DEFINE_multi_string(
    'prompt', [], 'generate: a user message (repeat the flag for several).')
_SYSTEM = flags.DEFINE_string(
    'system', '', 'generate: a system message put before each prompt.')
_MAX_NEW = flags.DEFINE_integer('max_new_tokens', 64,
                                'generate: the longest answer, in tokens.')
_TEMPERATURE = flags.DEFINE_float('temperature', 0.0,
                                  'generate: 0 for greedy decoding.')


def main(argv):
  del argv
  quiet_logs()
  config = _CONFIG.value
  try:
    if config.task != 'language_model':
      raise ConfigError('task', f'{config.task!r} is not a language-model '
                        'config', 'use a config with task=language_model, '
                        'e.g. configs/smollm2_lora.py')
    if _MODE.value == 'generate':
      for prompt, answer in answers.answers(
          config, _WORKDIR.value, _PROMPT.value, _SYSTEM.value,
          _MAX_NEW.value, _TEMPERATURE.value):
        print(f'user: {prompt}\nassistant: {answer}\n', flush=True)
      return
    results = train_and_evaluate(config, _WORKDIR.value,
                                 log=lambda line: print(line, flush=True))
  except ConfigError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  print(final_line(results), flush=True)
  sys.exit(EXIT_STATUS[results['status']])


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)

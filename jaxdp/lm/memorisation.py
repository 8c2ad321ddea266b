"""The Secret Sharer attack on a non-private and a DP fine-tune of one model.

`run(config, workdir)` trains the config on the same data for the same number
of steps in `<workdir>/non_private` (σ = 0, no clipping: plain training),
`<workdir>/dp` (the config's own privacy settings) and, for a config whose
privacy unit is the conversation, `<workdir>/dp_user` (the same target ε per
user, each user's conversations packed into rows of `user_max_length`
tokens), then measures every canary's exposure (`exposure.py`) under each
model and writes `<workdir>/exposure.{json,md}`. Every run resumes if
interrupted.

Why the third run: a canary planted in k conversations of one user is
protected by conversation-level DP only as a group of k, i.e. at about k·ε;
user-level DP protects all of that user's conversations at ε.
"""

import json
import math
import os

import jax

from jaxdp.train import loop as train
from jaxdp.errors import ConfigError
from jaxdp.lm import exposure
from jaxdp.lm import generate
from jaxdp.lm import synthetic_conversations
from jaxdp.lm import task as lm_task


def non_private(config):
  """`config` with its privacy removed: no noise, no clipping."""
  plain = config.copy_and_resolve_references()
  with plain.unlocked():
    plain.dp.noise_multiplier = 0.0
    plain.dp.target_epsilon = None
    plain.dp.clip_norm = math.inf
  return plain


def per_user(config, max_length: int):
  """`config` with the user as privacy unit, rows of `max_length` tokens."""
  user = config.copy_and_resolve_references()
  with user.unlocked():
    user.lm.privacy_unit = 'user'
    user.lm.max_length = max_length
  return user


def canaries_of(config) -> list:
  if config.data.name == 'synthetic_support':
    return synthetic_conversations.make()[2]
  path = os.path.join(config.data.data_dir, 'canaries.json')
  if not os.path.exists(path):
    raise ConfigError('data.data_dir', f'no canaries.json in '
                      f'{config.data.data_dir}', 'make the data with python '
                      '-m experiments.make_conversations, which writes it')
  return synthetic_conversations.read_canaries(config.data.data_dir)


def run(config, workdir: str, num_candidates: int = 1000,
        user_max_length: int = 320, log=print) -> dict:
  if config.task != 'language_model':
    raise ConfigError('task', 'the exposure test needs a language model',
                      'use a config with task=language_model')
  canaries = canaries_of(config)
  runs = {}
  configs = [('non_private', non_private(config)), ('dp', config)]
  if config.lm.privacy_unit == 'conversation' and user_max_length:
    configs.append(('dp_user', per_user(config, user_max_length)))
  for name, run_config in configs:
    log(f'--- training {name} ---')
    runs[name] = train.train_and_evaluate(
        run_config, os.path.join(workdir, name), log=log)
  pretrained = lm_task.load_model(config)
  model = lm_task.build_model(config, pretrained.config)
  _, frozen = lm_task.initial_params(config, model, pretrained.params,
                                     jax.random.key(0))
  table = []
  for name in runs:
    params = generate.trained_params(os.path.join(workdir, name), frozen)
    for row in exposure.canary_exposures(
        model.apply, params, pretrained.tokenizer, pretrained.chat_template,
        canaries, num_candidates):
      table.append(dict(row, run=name))
  summary = {name: {k: runs[name][k] for k in (
      'status', 'epsilon', 'delta', 'noise_multiplier', 'clip_norm', 'steps',
      'test_loss', 'accuracy', 'privacy_unit', 'num_examples',
      'wall_seconds')} for name in runs}
  for name in runs:
    summary[name]['conversations_left_out'] = runs[name][
        'non_private_data_statistics']['conversations_left_out']
  results = {'runs': summary, 'exposures': table, 'chance': exposure.CHANCE}
  with open(os.path.join(workdir, 'exposure.json'), 'w') as f:
    json.dump(results, f, indent=1)
  with open(os.path.join(workdir, 'exposure.md'), 'w') as f:
    f.write(markdown(results))
  return results


def markdown(results: dict) -> str:
  """One row per canary: its exposure under every run."""
  by = {(r['name'], r['run']): r for r in results['exposures']}
  names = list(dict.fromkeys(r['name'] for r in results['exposures']))
  runs = results['runs']
  header = ['canary', 'planted']
  for run, r in runs.items():
    header.append('non-private' if run == 'non_private' else
                  f'DP, ε = {r["epsilon"]:.2f} per {r["privacy_unit"]}')
  lines = ['| ' + ' | '.join(header) + ' |',
           '|' + '---|' * len(header)]
  for name in names:
    cells = [name, f'{by[(name, "dp")]["repeats"]}×']
    for run in runs:
      r = by[(name, run)]
      cells.append(f'{r["extrapolated_exposure"]:.1f} (sampled '
                   f'{r["sampled_rank_exposure"]:.1f})')
    lines.append('| ' + ' | '.join(cells) + ' |')
  lines.append('')
  lines.append(
      f'Exposure in bits, extrapolated (sampled rank in brackets); chance, '
      f'for a never-seen secret, is {results["chance"]:.2f} bits and the '
      'maximum log2 |R| = 19.9. Held-out loss per token: ' + ', '.join(
          f'{run} {r["test_loss"]:.3f}' for run, r in runs.items()) + '.')
  left_out = {run: r['conversations_left_out'] for run, r in runs.items()
              if r['conversations_left_out']}
  if left_out:
    lines.append('Conversations that did not fit their user\'s row (left '
                 f'out of training): {left_out}.')
  return '\n'.join(lines) + '\n'

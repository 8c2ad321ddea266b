"""The Secret Sharer attack on a non-private and a DP fine-tune of one model.

`run(config, workdir)` trains the config twice on the same data for the same
number of steps, in `<workdir>/non_private` (σ = 0, no clipping: plain
training) and `<workdir>/dp` (the config's own privacy settings), then
measures every canary's exposure (`exposure.py`) under both models and writes
`<workdir>/exposure.{json,md}`. Both runs resume if interrupted.
"""

import json
import math
import os

import jax

from jaxdp import train
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


def canaries_of(config) -> list:
  if config.data.name == 'synthetic_support':
    return synthetic_conversations.make()[2]
  path = os.path.join(config.data.data_dir, 'canaries.json')
  if not os.path.exists(path):
    raise ConfigError('data.data_dir', f'no canaries.json in '
                      f'{config.data.data_dir}', 'make the data with python '
                      '-m experiments.make_conversations, which writes it')
  return synthetic_conversations.read_canaries(config.data.data_dir)


def run(config, workdir: str, num_candidates: int = 1000, log=print) -> dict:
  if config.task != 'language_model':
    raise ConfigError('task', 'the exposure test needs a language model',
                      'use a config with task=language_model')
  canaries = canaries_of(config)
  runs = {}
  for name, run_config in (('non_private', non_private(config)),
                           ('dp', config)):
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
      'test_loss', 'accuracy', 'privacy_unit', 'wall_seconds')}
             for name in runs}
  results = {'runs': summary, 'exposures': table, 'chance': exposure.CHANCE}
  with open(os.path.join(workdir, 'exposure.json'), 'w') as f:
    json.dump(results, f, indent=1)
  with open(os.path.join(workdir, 'exposure.md'), 'w') as f:
    f.write(markdown(results))
  return results


def markdown(results: dict) -> str:
  """One row per canary: exposure without and with DP."""
  by = {(r['name'], r['run']): r for r in results['exposures']}
  names = list(dict.fromkeys(r['name'] for r in results['exposures']))
  runs = results['runs']
  eps = runs['dp']['epsilon']
  lines = [
      f'| canary | planted | exposure, non-private | exposure, DP (ε = '
      f'{eps:.2f} per {runs["dp"]["privacy_unit"]}) |',
      '|---|---|---|---|']
  for name in names:
    cells = []
    for run in ('non_private', 'dp'):
      r = by[(name, run)]
      cells.append(f'{r["extrapolated_exposure"]:.1f} (sampled '
                   f'{r["sampled_rank_exposure"]:.1f})')
    lines.append(f'| {name} | {by[(name, "dp")]["repeats"]}× | {cells[0]} | '
                 f'{cells[1]} |')
  lines.append('')
  lines.append(f'Chance (a never-seen secret): {results["chance"]:.2f} bits '
               'expected; the maximum is log2 |R|. Held-out loss: '
               f'non-private {runs["non_private"]["test_loss"]:.3f}, DP '
               f'{runs["dp"]["test_loss"]:.3f}.')
  return '\n'.join(lines) + '\n'

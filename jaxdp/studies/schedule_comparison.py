"""Variants of `config.dp` side by side, at equal ε: noise schedules and
adaptive clipping, clip rules, or independent against correlated noise.

Each variant changes only `config.dp` (a noise schedule's shape and final
ratio, adaptive clipping, or the clip rule); σ is calibrated by `build_mechanism` so every
run meets the same `dp.target_epsilon`. Runs go through the real trainer
(`train_and_evaluate`, in a fresh temporary workdir each), and the test
accuracy of each variant is summarised over seeds (mean ± 95% Student-t
interval, and the paired difference to the first variant).
"""

import tempfile
from typing import Callable, Sequence

from jaxdp.train import train_and_evaluate
from jaxdp.studies.intervals import format_interval
from jaxdp.studies.intervals import mean_interval


def variants(final_ratio: float) -> list:
  """(name, {config.dp field: value}) of the compared variants."""
  out = [('constant', {})]
  for shape in ('linear', 'exponential', 'cosine', 'step'):
    out.append((f'{shape} ×{final_ratio:g}', {
        'noise_schedule': shape, 'noise_schedule_final_ratio': final_ratio}))
  out.append(('constant + adaptive C (median)', {
      'adaptive_clip_quantile': 0.5}))
  return out


def clip_rule_variants() -> list:
  """(name, {config.dp field: value}): global clipping, then per-layer."""
  return [('global', {}),
          ('per_layer, equal split', {'clip_rule': 'per_layer'}),
          ('per_layer, split by parameters', {
              'clip_rule': 'per_layer', 'per_layer_clip_split': 'params'})]


def noise_mechanism_variants(bands: int, buffers: int) -> list:
  """(name, {config.dp field: value}): DP-SGD's independent noise, then
  banded MF and BLT with `bands` cyclic groups (docs/correlated_noise.md)."""
  return [('DP-SGD (independent noise)', {}),
          (f'banded_mf, {bands} bands', {'noise_mechanism': 'banded_mf',
                                         'mf_bands': bands}),
          (f'blt, {buffers} buffers, {bands} groups', {
              'noise_mechanism': 'blt', 'mf_bands': bands,
              'mf_buffers': buffers})]


def compare(config, chosen: Sequence[tuple], seeds: Sequence[int],
            log: Callable[[str], None] = lambda line: None) -> list:
  """Trains every variant × seed; a summary row per variant."""
  rows, constant = [], None
  for name, fields in chosen:
    accuracy, first = [], None
    for seed in seeds:
      run = config.copy_and_resolve_references()
      run.seed = seed
      for field, value in fields.items():
        run.dp[field] = value
      with tempfile.TemporaryDirectory() as workdir:
        results = train_and_evaluate(run, workdir, log=lambda line: None)
      accuracy.append(results['accuracy'])
      first = first or results
      final_c = (results['history'][-1]['clip_norm'] if results['history']
                 else None)
      log(f'{name} seed {seed}: accuracy {results["accuracy"]:.4f}, ε '
          f'{results["epsilon"]:.4f}, σ {results["noise_multiplier"]:.4g}, '
          f'final C {final_c}')
    mean, half = mean_interval(accuracy)
    ratio = fields.get('noise_schedule_final_ratio', 1.0)
    row = {'variant': name, 'seeds': len(accuracy),
           'sigma_first': first['noise_multiplier'],
           'sigma_last': first['noise_multiplier'] * ratio,
           'epsilon': first['epsilon'], 'accuracy_mean': mean,
           'accuracy_ci95': half, 'accuracy': accuracy}
    if constant is None:
      constant = accuracy
    else:
      row['minus_constant_mean'], row['minus_constant_ci95'] = mean_interval(
          [a - c for a, c in zip(accuracy, constant)])
    rows.append(row)
  return rows


def table(rows: list) -> str:
  lines = ['| variant | σ first → last | ε | test accuracy, mean ± 95% CI | '
           f'minus {rows[0]["variant"]} (paired) |', '|---|---|---|---|---|']
  for r in rows:
    paired = (format_interval(r['minus_constant_mean'],
                              r['minus_constant_ci95'], 4, sign=True)
              if 'minus_constant_mean' in r else '—')
    lines.append(f'| {r["variant"]} | {r["sigma_first"]:.3f} → '
                 f'{r["sigma_last"]:.3f} | {r["epsilon"]:.3f} | '
                 f'{format_interval(r["accuracy_mean"], r["accuracy_ci95"], 4)}'
                 f' | {paired} |')
  return '\n'.join(lines)

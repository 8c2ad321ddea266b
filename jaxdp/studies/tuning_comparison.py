"""Strategies side by side: equal trials, equal total ε, many seeds.

Every strategy gets the same budget (`config.dp.target_epsilon` for the whole
search) and the same (expected) number of trials; a seed fixes each trial's
privacy seed by its index, so strategies that try the same candidate at the
same index see the same noise. The released model's test accuracy is
summarised by its mean and a 95% Student-t interval over seeds, and each
strategy is compared with random search seed by seed (paired differences).
"""

import statistics
from typing import Callable, Sequence

from jaxdp.studies.intervals import format_interval
from jaxdp.studies.intervals import mean_interval
from jaxdp.tuning.run import TuneSettings
from jaxdp.tuning.run import Tuner


def compare(tuner: Tuner, settings: Sequence[TuneSettings],
            seeds: Sequence[int],
            log: Callable[[str], None] = lambda line: None) -> list:
  """Runs every settings × seed; a summary row per settings."""
  runs = {s.strategy: [] for s in settings}
  for seed in seeds:
    for s in settings:
      result, trials = tuner.search_with_trials(s, seed)
      result = dict(result, trials_run=len(trials.trials))
      runs[s.strategy].append(result)
      log(f'seed {seed} {s.strategy}: {len(trials.trials)} trials, released '
          f'test accuracy {result["best_accuracy"]}, ε = '
          f'{result["epsilon_total"]:.3f}')
  baseline = runs.get('random')
  rows = []
  for s in settings:
    results = runs[s.strategy]
    accuracy = [r['best_accuracy'] for r in results]  # None: K = 0.
    mean, half = mean_interval(accuracy)
    row = {
        'strategy': s.strategy, 'seeds': len(results),
        # Trials run (for random search K, which a release keeps hidden:
        # the benchmark evaluates the method, it releases nothing).
        'mean_trials': statistics.fmean(r['trials_run'] for r in results),
        'epsilon_total': results[0]['epsilon_total'],
        'epsilon_per_trial': results[0]['epsilon_per_trial'],
        'accounting': results[0]['accounting'],
        'accuracy_mean': mean, 'accuracy_ci95': half,
        'accuracy_min': min((a for a in accuracy if a is not None),
                            default=None),
        'accuracy_max': max((a for a in accuracy if a is not None),
                            default=None),
        'nothing_released': sum(a is None for a in accuracy),
    }
    if baseline is not None and s.strategy != 'random':
      paired = [r['best_accuracy'] - b['best_accuracy']
                for r, b in zip(results, baseline)
                if r['best_accuracy'] is not None
                and b['best_accuracy'] is not None]
      row['minus_random_mean'], row['minus_random_ci95'] = mean_interval(
          paired)
    rows.append(row)
  return rows


def table(rows: list) -> str:
  """A Markdown table of `compare`'s rows."""
  lines = ['| strategy | trials (mean) | ε total | ε per trial | accounting '
           '| released test accuracy, mean ± 95% CI | min–max | minus random '
           '(paired) |', '|---|---|---|---|---|---|---|---|']
  for r in rows:
    paired = (format_interval(r['minus_random_mean'],
                              r['minus_random_ci95'], sign=True)
              if 'minus_random_mean' in r else '—')
    lines.append(
        f'| {r["strategy"]} | {r["mean_trials"]:.1f} | '
        f'{r["epsilon_total"]:.2f} | {r["epsilon_per_trial"]:.2f} | '
        f'{r["accounting"]} | '
        f'{format_interval(r["accuracy_mean"], r["accuracy_ci95"])} | '
        f'{_span(r["accuracy_min"], r["accuracy_max"])} | {paired} |')
  return '\n'.join(lines)


def _span(low, high) -> str:
  return '—' if low is None else f'{low:.3f}–{high:.3f}'

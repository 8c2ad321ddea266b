"""What a run tells its reader: the banner, one line per evaluation, results.

The banner says what is trained on what, and the planned guarantee; each
evaluation adds a row to `history` and a progress line; `results` is the
dict written to `<workdir>/results.json`, and `final_line` its one-line
summary printed last.
"""

import json
import math
import os
import time
from typing import Callable, Optional

import jax


def json_number(x: float) -> Optional[float]:
  """`x` as a JSON number; None for inf and nan (JSON has neither)."""
  return float(x) if math.isfinite(x) else None


def banner(log: Callable[[str], None], task, config, mechanism,
           summary: dict, placement, num_params: int, num_frozen: int) -> None:
  """Logs the data, the model and the planned privacy guarantee."""
  s = summary
  log(f'data {task.name}: {task.num_train} train / {task.num_test} test from '
      f'{task.source}')
  log(f'model {task.results.get("model", config.model.name)}: {num_params} '
      f'trained parameters'
      + (f' ({num_frozen} frozen: {task.frozen_note})' if num_frozen else '')
      + f' on {placement.num_devices} {jax.devices()[0].platform} device(s) '
      f'({jax.process_count()} host(s)), parameters {placement.param_sharding}')
  log(f'privacy: sampler {s["sampler"]} q={s["sampling_probability"]:.5g} '
      f'(expected batch {s["expected_batch_size"]:g}, padded to '
      f'{mechanism.sampler.padded_size}), C={config.dp.clip_norm:g}, '
      f'σ={s["noise_multiplier"]:.4g}, {s["steps"]} steps, '
      f'ε={s["epsilon"] if s["epsilon"] is None else round(s["epsilon"], 4)} '
      f'at δ={s["delta"]:g} ({s["accountant"]}, {s["neighboring_relation"]})'
      + (', seeds from OS entropy' if config.dp.secure_noise else ''))


def eval_row(step: int, executed: int, test_loss: float, accuracy: float,
             epsilon: float, metrics: dict, start: float) -> dict:
  """The `history` row of an evaluation after `step` (JSON-ready)."""
  diagnostics = {k: float(v) for k, v in metrics.items()}
  return {
      'step': step, 'executed': executed,
      'test_loss': json_number(test_loss),
      'accuracy': json_number(accuracy),
      'epsilon': json_number(epsilon),
      # The last step's C: public (adaptive clipping derives it from
      # noisy counts only).
      'clip_norm': json_number(diagnostics.pop('clip_norm')),
      'wall_seconds': time.time() - start,
      # Statistics of the private batch, outside the DP guarantee.
      'non_private_diagnostics': {k: json_number(v)
                                  for k, v in diagnostics.items()},
  }


def eval_line(row: dict, planned: int, test_loss: float, accuracy: float,
              epsilon: float, start: float) -> str:
  """The progress line of the evaluation `row`."""
  return (f'step {row["step"]}/{planned} | test_loss {test_loss:.4f} | '
          f'accuracy {accuracy:.4f} | ε {epsilon:.4f} | batch_loss '
          f'{row["non_private_diagnostics"]["batch_loss"]:.4f} (not '
          f'private) | clipped '
          f'{row["non_private_diagnostics"]["clipped_fraction"]:.2f} | '
          f'{time.time() - start:.1f}s')


def changed_fields(saved: dict, current: dict, prefix: str = '') -> list:
  """'field: old → new' for every leaf of the config that differs."""
  out = []
  for key in sorted(set(saved) | set(current)):
    old, new = saved.get(key), current.get(key)
    if isinstance(old, dict) and isinstance(new, dict):
      out += changed_fields(old, new, f'{prefix}{key}.')
    elif old != new:
      out.append(f'{prefix}{key}: {old!r} → {new!r}')
  return out


def results(summary: dict, book, budget, task, placement, status: str,
            step: int, test_loss: float, accuracy: float, num_params: int,
            num_frozen: int, start: float) -> dict:
  """The results of a run that stopped at `step` with `status` (no ledger
  head yet: the final ledger entry is written after them)."""
  config, progress = book.config, book.progress
  eps = book.spent()
  out = dict(summary)  # The planned run; `epsilon` is replaced by ε spent.
  out.update({
      'status': status,
      'epsilon': json_number(eps),
      'planned_epsilon': summary['epsilon'],
      'steps': step,
      'planned_steps': book.mechanism.num_steps,
      'executed_steps': book.accounted(),
      'rollbacks': progress.rollbacks,
      'epsilon_remaining': budget.remaining(book.accounted()),
      'accuracy': json_number(accuracy),
      'test_loss': json_number(test_loss),
      'dataset': task.name,
      'dataset_source': task.source,
      'num_train_examples': task.num_train,
      'model': config.model.name,
      'num_params': int(num_params),
      'num_frozen_params': int(num_frozen),
      'seed': config.seed,
      'secure_noise': bool(config.dp.secure_noise),
      'platform': jax.devices()[0].platform,
      'num_devices': placement.num_devices,
      'num_hosts': jax.process_count(),
      'wall_seconds': time.time() - start,
      'history': progress.evals,
      'rollback_log': progress.rollback_log,
  })
  out.update(task.results)
  return out


def write(workdir: str, config, results: dict) -> None:
  """Writes `config.json` and `results.json` into `workdir`."""
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    f.write(config.to_json(indent=2))
  with open(os.path.join(workdir, 'results.json'), 'w') as f:
    json.dump(results, f, indent=2, allow_nan=False)


def final_line(results: dict) -> str:
  """The one-line JSON summary printed last (history left out)."""
  return json.dumps({k: v for k, v in results.items()
                     if k not in ('history', 'rollback_log')},
                    allow_nan=False)

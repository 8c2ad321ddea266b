"""An audit's outputs: the printed table, the JSON line, the ROC plot."""

import json
import os

import numpy as np

from jaxdp.audit import ceiling as ceiling_lib

REPORTED_FPRS = (0.001, 0.01)


def summary(audit) -> dict:
  """The JSON object of a `run.Audit`."""
  result, mechanism = audit.result, audit.mechanism
  claimed = audit.epsilon_claimed
  roc = result.rocs.get(result.headline) if result.headline else None
  ceilings = ceiling_lib.profile_ceiling(np.array(REPORTED_FPRS), mechanism)
  line = {
      'mode': result.mode,
      'mutation': audit.settings.mutation,
      'canary_type': audit.settings.canary_type,
      'epsilon_claimed': claimed,
      'delta': mechanism.delta,
      'epsilon_lower_bound': result.epsilon_lower_bound,
      'confidence': result.confidence,
      'max_certifiable': result.max_certifiable,
      # A leak is shown only by a bound above the claim.
      'leak_detected': bool(claimed is not None
                            and result.epsilon_lower_bound > claimed),
      'num_canaries': result.num_canaries,
      'trials': result.trials,
      'runs': result.runs,
      'auc': None if roc is None else roc.auc,
      'aucs': {name: r.auc for name, r in result.rocs.items()},
      'negatives': None if roc is None else roc.negatives,
      'attack': result.headline,
      'best': result.best,
      'test_accuracy': result.test_accuracy,
      'data': audit.data,
      'wall_seconds': audit.wall_seconds,
  }
  for fpr, top in zip(REPORTED_FPRS, ceilings):
    line[f'tpr_at_fpr_{fpr:g}'] = None if roc is None else roc.tpr_at(fpr)
    line[f'tpr_ceiling_at_fpr_{fpr:g}'] = float(top)
  return line


def table(line: dict) -> str:
  """A markdown table of the audit's numbers."""
  def fmt(x, digits=3):
    return '—' if x is None else (f'{x:.{digits}g}' if isinstance(x, float)
                                  else str(x))
  rows = [
      ('mode / canaries / mutation', f"{line['mode']} / {line['canary_type']}"
       f" × {line['num_canaries']} / {line['mutation']}"),
      ('claimed ε (δ)', f"{fmt(line['epsilon_claimed'], 4)} "
       f"({line['delta']:g})"),
      (f"ε lower bound ({line['confidence']:.0%} confidence)",
       fmt(line['epsilon_lower_bound'], 4)),
      ('most this audit could certify', fmt(line['max_certifiable'], 4)),
      ('leak detected (bound > claim)', 'yes' if line['leak_detected']
       else 'no'),
      ('best test', line['best']),
      ('AUC', ', '.join(f'{fmt(auc)} ({name})'
                         for name, auc in line['aucs'].items()) or '—'),
  ]
  for fpr in REPORTED_FPRS:
    rows.append((f'TPR at FPR {fpr:.1%} ({line["attack"] or "—"}): measured '
                 f"(point estimate over {fmt(line['negatives'])} negatives) / "
                 'allowed by the claim',
                 f"{fmt(line[f'tpr_at_fpr_{fpr:g}'])} / "
                 f"{fmt(line[f'tpr_ceiling_at_fpr_{fpr:g}'])}"))
  rows += [('canary trials / training runs',
            f"{line['trials']} / {line['runs']}"),
           ('held-out accuracy (mean over runs)', fmt(line['test_accuracy'])),
           ('wall time', f"{line['wall_seconds']:.0f} s")]
  out = ['| quantity | value |', '|---|---|']
  out += [f'| {name} | {value} |' for name, value in rows]
  return '\n'.join(out)


def plot_roc(path: str, result, mechanism, title: str) -> None:
  """ROC curves on log-log axes, with the ceiling the claimed ε allows."""
  import matplotlib  # Imported here: only the plot needs it.
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt
  fpr = np.logspace(-4, 0, 200)
  figure, axes = plt.subplots(figsize=(5.5, 5))
  axes.plot(fpr, ceiling_lib.profile_ceiling(fpr, mechanism), 'k--',
            label='most any attack may reach (claimed guarantee)')
  axes.plot(fpr, fpr, ':', color='grey', label='chance')
  for name, roc in result.rocs.items():
    axes.step(np.maximum(roc.fpr, 1e-4), roc.tpr, where='post',
              label=f'{name} (AUC {roc.auc:.3f}, {roc.negatives} negatives)')
  axes.set(xscale='log', yscale='log', xlim=(1e-4, 1), ylim=(1e-4, 1.05),
           xlabel='false positive rate', ylabel='true positive rate')
  axes.set_title(title, fontsize=10)
  axes.legend(loc='lower right', fontsize=8)
  figure.tight_layout()
  figure.savefig(path, dpi=120)
  plt.close(figure)


def write(workdir: str, line: dict, audit) -> dict:
  """Writes audit.json, audit.md and audit_roc.png to `workdir`."""
  os.makedirs(workdir, exist_ok=True)
  paths = {name: os.path.join(workdir, name)
           for name in ('audit.json', 'audit.md', 'audit_roc.png')}
  with open(paths['audit.json'], 'w') as f:
    json.dump(line, f, indent=1)
  with open(paths['audit.md'], 'w') as f:
    f.write(table(line) + '\n')
  title = (f"{line['mode']}, mutation {line['mutation']}: "
           f"ε ≥ {line['epsilon_lower_bound']:.2f} vs claimed "
           f"{line['epsilon_claimed'] or float('inf'):.2f}")
  plot_roc(paths['audit_roc.png'], audit.result, audit.mechanism, title)
  return paths

"""The three audits: one run, many runs, and LiRA with shadow models.

Each trains through an `AuditTrainer`, scores the canaries (`scores`), and
turns the scores into a lower bound on ε (`bounds`) and a ROC curve
(`membership`). When an audit tries several scores or guess counts, the
confidence is split between them (Bonferroni), so the reported bound holds at
the stated confidence whichever of them turns out best.
"""

import dataclasses
from typing import Optional

import numpy as np

from jaxdp.audit import bounds
from jaxdp.audit import canaries as canaries_lib
from jaxdp.audit import membership
from jaxdp.audit import scores as scores_lib

MODES = ('one_run', 'multi_run', 'lira')

# One-run guesses: the top k scores guessed present (and, in the symmetric
# variant, the bottom k absent), for k these fractions of the canaries.
GUESS_FRACTIONS = (0.02, 0.05, 0.1, 0.2)


@dataclasses.dataclass(frozen=True)
class AuditResult:
  mode: str
  num_canaries: int  # Canaries per run (1 for multi_run).
  trials: int  # Canary trials: m (one_run), runs (multi_run), m × models.
  runs: int  # Training runs.
  epsilon_lower_bound: float
  confidence: float
  # The bound had every guess (or every test run) been right: what this
  # audit could certify at most.
  max_certifiable: float
  best: str  # Which score (and guesses or threshold) gave the bound.
  rocs: dict  # {curve name: membership.Roc}
  # The ROC whose AUC and TPR are the headline, fixed before the outcome
  # (scores.headline, or lira); None when there is no ROC (one class only).
  headline: Optional[str]
  test_accuracy: Optional[float]  # Mean over runs.


def guess_grid(num_canaries: int) -> list:
  """(top, bottom) guess counts tried by the one-run audit."""
  grid = []
  for k in sorted({max(1, round(num_canaries * f)) for f in GUESS_FRACTIONS}):
    grid.append((k, 0))
    if 2 * k <= num_canaries:
      grid.append((k, k))
  return grid


def one_run_bound(scores: dict, presence: np.ndarray, delta: float,
                  confidence: float) -> tuple:
  """(bound, max certifiable, description) over `scores` × `guess_grid`."""
  m = len(presence)
  tries = [(name, g) for name in scores for g in guess_grid(m)]
  level = 1.0 - (1.0 - confidence) / len(tries)
  best = (0.0, 'no guess refutes ε = 0')
  ceiling = 0.0
  for name, (top, bottom) in tries:
    order = np.argsort(scores[name], kind='stable')
    correct = int(presence[order[m - top:]].sum())
    correct += int((~presence[order[:bottom]]).sum())
    bound = bounds.one_run_lower_bound(m, top + bottom, correct, delta, level)
    ceiling = max(ceiling, bounds.max_certifiable(m, top + bottom, delta,
                                                  level))
    if bound > best[0]:
      best = (bound, f'{name}: {correct} of {top + bottom} guesses right '
                     f'({top} present, {bottom} absent)')
  return best[0], ceiling, best[1]


def _mean_accuracy(observations) -> Optional[float]:
  values = [o.test_accuracy for o in observations
            if o.test_accuracy is not None]
  return float(np.mean(values)) if values else None


def one_run(trainer, seed: int, confidence: float) -> AuditResult:
  """Steinke et al. 2023: every canary present w.p. ½, one training run."""
  m = trainer.canaries.count
  presence = canaries_lib.draw_presence(m, seed)
  observation = trainer.run(presence, seed)
  scored = scores_lib.all_scores(observation, trainer.canaries.labels,
                                 trainer.mechanism)
  bound, ceiling, best = one_run_bound(scored, presence,
                                      trainer.mechanism.delta, confidence)
  rocs = _rocs(scored, presence)
  return AuditResult('one_run', m, m, 1, bound, confidence, ceiling, best,
                     rocs, _headline(rocs, trainer),
                     _mean_accuracy([observation]))


def _rocs(scored: dict, presence: np.ndarray) -> dict:
  """ROC of each score; none if every canary is present, or none is."""
  if presence.all() or not presence.any():
    return {}
  return {name: membership.roc(s, presence) for name, s in scored.items()}


def _headline(rocs: dict, trainer) -> Optional[str]:
  return scores_lib.headline(trainer.canaries.white_box) if rocs else None


def _threshold_counts(scores, present, threshold):
  flagged = scores >= threshold
  return (int((flagged & ~present).sum()), int((~present).sum()),
          int((~flagged & present).sum()), int(present.sum()))


def multi_run(trainer, runs: int, seed: int,
              confidence: float) -> AuditResult:
  """One canary, present w.p. ½ in each of `runs` independent runs.

  The first half of the runs picks each score's threshold; the second half,
  untouched by that choice, gives the Clopper–Pearson bound.
  """
  if trainer.canaries.count != 1:
    raise ValueError('a multi-run audit trains with one canary per run')
  if runs < 4:
    raise ValueError(f'a multi-run audit needs at least 4 runs, got {runs}')
  observations = []
  for r in range(runs):
    run_seed = seed + r
    observations.append(trainer.run(
        canaries_lib.draw_presence(1, run_seed), run_seed))
  present = np.array([o.presence[0] for o in observations])
  scored = {}
  for o in observations:
    for name, s in scores_lib.all_scores(o, trainer.canaries.labels,
                                         trainer.mechanism).items():
      scored.setdefault(name, []).append(s[0])
  scored = {name: np.array(v) for name, v in scored.items()}
  half = runs // 2
  delta = trainer.mechanism.delta
  level = 1.0 - (1.0 - confidence) / len(scored)
  best = (0.0, 'no threshold refutes ε = 0')
  for name, s in scored.items():
    pick = lambda t: bounds.multi_run_lower_bound(
        *_threshold_counts(s[:half], present[:half], t), delta, level)
    threshold = max(np.unique(s[:half]), key=pick)
    counts = _threshold_counts(s[half:], present[half:], threshold)
    bound = bounds.multi_run_lower_bound(*counts, delta, level)
    if bound > best[0]:
      best = (bound, f'{name} ≥ {threshold:.4g}: {counts[0]} false positives '
                     f'of {counts[1]}, {counts[2]} false negatives of '
                     f'{counts[3]} test runs')
  test_present = present[half:]
  ceiling = bounds.multi_run_lower_bound(
      0, int((~test_present).sum()), 0, int(test_present.sum()), delta, level)
  rocs = _rocs({name: s[half:] for name, s in scored.items()}, test_present)
  return AuditResult('multi_run', 1, runs - half, runs, best[0], confidence,
                     ceiling, best[1], rocs, _headline(rocs, trainer),
                     _mean_accuracy(observations))


def lira(trainer, models: int, seed: int, confidence: float) -> AuditResult:
  """LiRA over `models` runs, each with every canary present w.p. ½.

  Each model is in turn the target and the others its shadows. The ROC
  pools every (model, canary). The ε bound is the one-run bound on model 0
  with its LiRA scores, which come from the other models only and so are
  independent of model 0's draws.
  """
  m = trainer.canaries.count
  observations = [trainer.run(canaries_lib.draw_presence(m, seed + k),
                              seed + k) for k in range(models)]
  members = np.stack([o.presence for o in observations])
  headline = scores_lib.headline(trainer.canaries.white_box)
  observed = np.stack([scores_lib.all_scores(o, trainer.canaries.labels,
                                             trainer.mechanism)[headline]
                       for o in observations])
  attack = membership.lira_scores(observed, members)
  bound, ceiling, best = one_run_bound({'lira': attack[0]}, members[0],
                                      trainer.mechanism.delta, confidence)
  rocs = {'lira': membership.roc(attack, members),
          f'global threshold on {headline}': membership.roc(observed,
                                                            members)}
  return AuditResult('lira', m, m * models, models, bound, confidence,
                     ceiling, f'model 0, {best}', rocs, 'lira',
                     _mean_accuracy(observations))

"""A DP training run end to end: `train_and_evaluate(config, workdir)`.

  loop           the run: the trainer and its loop
  resume         opening a workdir's run, checking a restored checkpoint
  bookkeeping    ledger, checkpoints and progress in step (RunBook)
  report         the log lines and results.json
  step           the jitted training and evaluation steps
  state          the explicit state of a run (TrainState)
  run_identity   what a resume may not change
  checkpointing  checkpoints (orbax)
  ledger         the hash-chained privacy ledger
  divergence     divergence detection from signals that cost no privacy
"""

from jaxdp.train.loop import BUDGET_EXHAUSTED
from jaxdp.train.loop import COMPLETED
from jaxdp.train.loop import DIVERGED
from jaxdp.train.loop import EXIT_STATUS
from jaxdp.train.loop import INTERRUPTED
from jaxdp.train.loop import final_line
from jaxdp.train.loop import train_and_evaluate

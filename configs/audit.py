"""Privacy audit of DP-SGD on the bundled digits: the table in docs/audits.md.

Commands (8–23 s each on a 2-core CPU, plus about 8 s to start; see the
docs/audits.md for the measured tables):
  python -m experiments.audit --config=configs/audit.py --workdir=/tmp/audit \
      --mode=one_run --canaries=1000 --mutation=none
  python -m experiments.audit ... --mutation=no_clipping   (and the others)

Settings: MLP (64 hidden units) on scikit-learn's digits plus the canaries,
Poisson sampling with expected batch 256, 100 steps, σ calibrated to the
claimed ε = 1 at δ = 1e-5 (PLD). The claimed ε is kept small so that the
audit could certify more than it: with 1000 gradient canaries the one-run
audit can certify at most 4.08 at 95% (every guess right; 16 tries,
Bonferroni). A bound above 1 shows a leak; a correct implementation gives a
bound of at most 1 with probability at least 95% (measured: 0.00–0.30 over
five seeds; every mutation: 1.74–4.08).
"""

from configs import base


def get_config():
  config = base.get_config()
  config.model.hidden_sizes = (64,)
  config.dp.batch_size = 256
  config.dp.target_epsilon = 1.0
  config.dp.delta = 1e-5
  config.train.num_steps = 100
  config.optimizer.learning_rate = 0.5
  config.optimizer.momentum = 0.0
  return config

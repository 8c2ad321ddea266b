"""Privacy audit of DP-SGD on the bundled digits: the README's audit table.

Commands (each a few minutes on a 2-core CPU; see the README's "Privacy
audits" for the measured table):
  python -m experiments.audit --config=configs/audit.py --workdir=/tmp/audit \
      --mode=one_run --canaries=1000 --mutation=none
  python -m experiments.audit ... --mutation=no_clipping   (and the others)

Settings: MLP (64 hidden units) on scikit-learn's digits plus the canaries,
Poisson sampling with expected batch 256, 100 steps, σ calibrated to the
claimed ε = 1 at δ = 1e-5 (PLD). The claimed ε is kept small so that the
audit could certify more than it: with 1000 canaries a one-run audit can
certify at most about 3.3 at 95% (every guess right), so a bound above 1
means a leak, and a bound below 1 is what a correct implementation must give.
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

"""Private hyperparameter search on the bundled digits: the table in docs/schedules_and_tuning.md.

Command (one search, 8 trials on average, about 1 minute on a 2-core CPU):
  python -m experiments.tune --config=configs/tune.py --workdir=/tmp/tune \
      --strategy=random --trials=8

dp.target_epsilon is the budget of the *whole search* (every trial, and the
release of the best), at dp.delta. Trials train the base MLP with DP-SGD
(Poisson sampling) on the 1,437 training digits and are scored on them too,
by their count of correct predictions plus Gaussian noise σ_s = 10; the
test split only reports the released model. Accounting: RDP (integer orders);
random search by repeat-and-select (Papernot & Steinke 2022), grid and qiea
by composition. Searched: learning rate, clip norm, batch size, epochs (see
jaxdp/tuning/space.py); σ is calibrated per candidate, never searched.

Benchmark of the three strategies (docs/schedules_and_tuning.md, "Tuning benchmark"):
  python -m experiments.tune_benchmark --config=configs/tune.py --seeds=20 \
      --trials=8
"""

from configs import base


def get_config():
  config = base.get_config()
  config.dp.target_epsilon = 4.0  # The whole search's ε.
  config.dp.delta = 1e-5
  config.optimizer.momentum = 0.0
  return config

"""De et al. 2022, "Unlocking High-Accuracy Differentially Private Image
Classification through Scale" (arXiv:2204.13650), CIFAR-10 from scratch.

Rows: wrn16_4_eps{1,2,4,8} (paper: 56.8, 65.9, 73.5, 79.5%) and wrn40_4_eps8
(81.4%), δ = 1e-5, Poisson sampling with expected batch 4096 of the 50,000
training images, C = 1, SGD without momentum, RDP accounting.

Settings and where they come from:
* ε = 1: σ = 10, 875 steps, learning rate 2 (the authors' released config).
* ε = 2: σ = 6, 1125 steps; RDP gives ε = 1.9996 for them.
* ε = 4 and 8: the paper's σ and steps were not available where this config
  was written. The step counts 1594 and 2468 are unverified, and σ is
  calibrated so that the run spends exactly the target ε in them. Learning
  rate 4 (the upper end of the paper's range) is likewise unverified.

The paper's recipe: each example's gradient is the mean over 16 augmented
views (flips and crops; `data.augmult`), clipped after averaging; the
parameters' exponential moving average (decay 0.9999, warmed up;
`optimizer.ema_decay`) is evaluated; convolutions are weight-standardised
(`model.weight_standardization`) in a GroupNorm WRN (16 groups). Remaining
differences from the authors' code: the activation comes after the norm
here, and the projection shortcut has no norm of its own.
On a CPU these rows take days; they are meant for accelerators.

Commands:
  python -m experiments.reproduce --paper=de2022 --rows=wrn16_4_eps1 \
      --data_dir=/path/to/data
  python -m experiments.reproduce --paper=de2022 --accounting_only
"""

import ml_collections

from configs import base
from jaxdp.studies.paper_tables import PaperRow

_N, _BATCH = 50000, 4096

# row: (depth, ε, σ or None, steps, learning rate, accuracy, notes)
_SETTINGS = {
    'wrn16_4_eps1': (16, 1.0, 10.0, 875, 2.0, 56.8, ''),
    'wrn16_4_eps2': (16, 2.0, 6.0, 1125, 2.0, 65.9, ''),
    'wrn16_4_eps4': (16, 4.0, None, 1594, 4.0, 73.5,
                     'steps and learning rate unverified; σ calibrated'),
    'wrn16_4_eps8': (16, 8.0, None, 2468, 4.0, 79.5,
                     'steps and learning rate unverified; σ calibrated'),
    'wrn40_4_eps8': (40, 8.0, None, 2468, 4.0, 81.4,
                     'steps and learning rate unverified; σ calibrated'),
}

ROWS = {
    name: PaperRow(
        dataset='cifar10', accuracy=accuracy, epsilon=eps, delta=1e-5,
        num_examples=_N, batch_size=_BATCH, steps=steps,
        noise_multiplier=sigma, accountant='rdp',
        notes=note)
    for name, (_, eps, sigma, steps, _, accuracy, note) in _SETTINGS.items()
}


def get_config(row: str = 'wrn16_4_eps1') -> ml_collections.ConfigDict:
  """The jaxdp config of one row."""
  if row not in ROWS:
    raise ValueError(f'unknown row {row!r}; rows: {", ".join(ROWS)}')
  depth, eps, sigma, steps, lr, _, _ = _SETTINGS[row]
  config = base.get_config()
  config.data.name = 'cifar10'
  config.model.name = 'wide_resnet'
  config.model.depth = depth
  config.model.width = 4
  config.model.groups = 16
  config.model.activation = 'relu'
  config.model.weight_standardization = True
  config.data.augmult = 16
  config.optimizer.ema_decay = 0.9999
  config.dp.batch_size = _BATCH
  config.dp.clip_norm = 1.0
  config.dp.noise_multiplier = sigma
  config.dp.target_epsilon = eps
  config.dp.delta = 1e-5
  config.dp.accountant = 'rdp'
  config.optimizer.name = 'sgd'
  config.optimizer.learning_rate = lr
  config.optimizer.momentum = 0.0
  config.train.num_steps = steps
  config.eval.every_steps = max(1, steps // 5)
  # Memory: clip 256 examples at a time per device (no effect on results).
  config.perf.microbatch_size = 256
  return config

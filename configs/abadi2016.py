"""Abadi et al. 2016, "Deep Learning with Differential Privacy" (CCS), MNIST.

Rows: large_noise (σ = 8), medium_noise (σ = 4), small_noise (σ = 2), which the
paper reports at about 90%, 95% and 97% test accuracy for ε = 0.5, 2 and 8
(δ = 1e-5). Network: one hidden layer of 1000 ReLU units; lot (expected batch)
600, so q = 0.01; per-example clip C = 4; SGD with learning rate 0.05, no
momentum; the moments accountant (`rdp_classic`; the paper used integer
orders up to 32, dp-accounting's default orders include those and more).

The images are first projected onto 60 principal components computed with
DP-PCA (`dp.pca_components`): Gaussian noise σ_p = 16, 7, 4 on the
covariance of unit-norm images, one release composed into ε
(`jaxdp/private_releases.py`), as in the paper. The paper's epoch counts
were not available where this config was written; each row runs the most
steps whose ε (jaxdp's accountant, PCA release included) stays within the
paper's ε: 4,237, 21,502 and 71,168 steps (42, 215 and 712 epochs).
`--accounting_only` shows the steps the paper's own accounting (integer
orders up to 32, which make the PCA release dearer) allows at the same σ:
2,611, 21,502 and 70,637.

Commands:
  python -m experiments.reproduce --paper=abadi2016 --data_dir=/path/to/data
  python -m experiments.train --config=configs/abadi2016.py:medium_noise \
      --workdir=/tmp/abadi_medium --config.data.data_dir=/path/to/data

Expected results and runtimes: docs/paper_tables.md.
"""

import ml_collections

from configs import base
from jaxdp import private_releases
from jaxdp.studies.paper_tables import MOMENTS_ORDERS
from jaxdp.studies.paper_tables import PaperRow
from jaxdp.studies.paper_tables import last_affordable_step

# row: (σ, σ_p of the paper's DP-PCA, ε, accuracy reported)
_SETTINGS = {
    'large_noise': (8.0, 16.0, 0.5, 90.0),
    'medium_noise': (4.0, 7.0, 2.0, 95.0),
    'small_noise': (2.0, 4.0, 8.0, 97.0),
}
_N, _LOT = 60000, 600

ROWS = {
    name: PaperRow(
        dataset='mnist', accuracy=accuracy, epsilon=eps, delta=1e-5,
        num_examples=_N, batch_size=_LOT, steps=None, noise_multiplier=sigma,
        accountant='rdp_classic', orders=MOMENTS_ORDERS,
        releases=((sigma_pca, 1),),
        notes='steps: the most σ affords within the paper\'s ε (epochs not '
              'available)')
    for name, (sigma, sigma_pca, eps, accuracy) in _SETTINGS.items()
}


def get_config(row: str = 'medium_noise') -> ml_collections.ConfigDict:
  """The jaxdp config of one noise level."""
  if row not in ROWS:
    raise ValueError(f'unknown row {row!r}; rows: {", ".join(ROWS)}')
  sigma, sigma_pca, eps, _ = _SETTINGS[row]
  config = base.get_config()
  config.data.name = 'mnist'
  config.model.name = 'mlp'
  config.model.hidden_sizes = (1000,)
  config.model.activation = 'relu'
  config.dp.batch_size = _LOT
  config.dp.clip_norm = 4.0
  config.dp.noise_multiplier = sigma
  config.dp.target_epsilon = eps
  config.dp.delta = 1e-5
  config.dp.accountant = 'rdp_classic'
  config.dp.pca_components = 60
  config.dp.pca_noise_multiplier = sigma_pca
  config.optimizer.name = 'sgd'
  config.optimizer.learning_rate = 0.05
  config.optimizer.momentum = 0.0
  steps = last_affordable_step('rdp_classic', _LOT / _N, sigma, 1e-5, eps,
                               private_releases.setup_event(config.dp))
  config.train.num_steps = steps
  config.eval.every_steps = max(1, steps // 5)
  return config

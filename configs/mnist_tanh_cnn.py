"""DP-SGD on real MNIST with the tanh CNN of Papernot et al. 2021.

Hyperparameters of Tramèr & Boneh 2021 (ICLR), Table 9, end-to-end CNN on
MNIST: expected batch 512, C = 0.1, SGD with momentum 0.9 and learning rate
0.5, 40 epochs, σ = 1.23 → (ε = 3, δ = 1e-5) under their accountant (RDP,
classic conversion), Poisson sampling. Their reported accuracy: 98.1%.

Needs the original MNIST files (IDX, as published) in a folder:
  python -m experiments.train --config=configs/mnist_tanh_cnn.py \
      --workdir=/tmp/mnist_cnn --config.data.data_dir=/path/to/mnist

The README's "Real data" section gives the result and wall time measured on
a 2-core CPU with this command.
"""

from configs import base


def get_config():
  config = base.get_config()
  config.data.name = 'mnist'
  config.data.source = 'files'
  config.model.name = 'tanh_cnn'
  config.model.activation = 'tanh'
  config.dp.batch_size = 512
  config.dp.clip_norm = 0.1
  config.dp.noise_multiplier = 1.23
  config.dp.target_epsilon = 3.0
  config.dp.accountant = 'rdp_classic'
  config.optimizer.name = 'sgd'
  config.optimizer.learning_rate = 0.5
  config.optimizer.momentum = 0.9
  config.train.num_epochs = 40.0
  config.eval.every_steps = 500
  return config

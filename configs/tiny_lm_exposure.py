"""The memorisation test: a tiny Llama trained on the synthetic conversations.

Trains a 2-layer Llama (random start, every weight trained, a BPE tokenizer
fitted to public text) twice on the same conversations, without and with DP,
and measures the exposure of the planted canaries (Carlini et al. 2019):

  python -m experiments.exposure --config=configs/tiny_lm_exposure.py \
      --workdir=/tmp/jaxdp_exposure

DP: ε = 8 at δ = 1e-5 per conversation (Poisson sampling, PLD accountant).
Runtime and the measured table: docs/language_models.md, "Memorisation".
"""

from configs import base


def get_config():
  config = base.get_config()
  config.task = 'language_model'
  config.data.name = 'synthetic_support'
  config.lm.pretrained = 'tiny'
  config.lm.max_length = 192
  config.lm.lora_rank = 0  # Full training: the model starts from nothing.
  config.dp.batch_size = 32
  config.dp.clip_norm = 1.0
  config.dp.target_epsilon = 8.0
  config.optimizer.name = 'adam'
  config.optimizer.learning_rate = 3e-3
  config.train.num_steps = 600
  config.eval.every_steps = 100
  config.eval.batch_size = 100
  config.recovery.loss_spike_factor = 0.0
  return config

"""DP LoRA fine-tuning of a tiny random Llama on the synthetic conversations.

The fast test of the language-model path (same code as SmolLM2, a 2-layer
model with byte tokens): seconds on a CPU.

  python -m experiments.finetune_lm --config=configs/tiny_lm.py \
      --workdir=/tmp/jaxdp_tiny_lm

ε = 8 at δ = 1e-5 over conversations (Poisson sampling, PLD accountant).
"""

from configs import base


def get_config():
  config = base.get_config()
  config.task = 'language_model'
  config.data.name = 'synthetic_support'
  config.lm.pretrained = 'tiny'
  config.lm.max_length = 512
  config.lm.lora_rank = 4
  config.dp.batch_size = 32
  config.dp.clip_norm = 1.0
  config.dp.target_epsilon = 8.0
  config.optimizer.name = 'adam'
  config.optimizer.learning_rate = 1e-2
  config.train.num_steps = 4
  config.eval.every_steps = 2
  config.eval.batch_size = 32
  return config

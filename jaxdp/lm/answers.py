"""Answers of a fine-tuned model to user prompts (`finetune_lm --mode=generate`)."""

import jax
import jax.numpy as jnp

from jaxdp.lm import chat
from jaxdp.lm import generate
from jaxdp.lm import task as lm_task
from jaxdp.models import lora


def answers(config, workdir: str, prompts: list, system: str,
            max_new_tokens: int, temperature: float):
  """Yields (prompt, answer) for each prompt, from the workdir's model.

  The model is `config.lm.pretrained` with the newest checkpoint's trained
  parameters of `workdir` (the pretrained model alone if there is none).
  """
  pretrained = lm_task.load_model(config)
  model = lm_task.build_model(config, pretrained.config)
  trainable, frozen = lm_task.initial_params(config, model, pretrained.params,
                                             jax.random.key(config.seed))
  params = generate.trained_params(workdir, frozen)
  if params is None:
    print(f'{workdir} has no checkpoint: answering with the pretrained model')
    params = lora.merge(frozen, trainable)
  params = jax.tree_util.tree_map(jnp.asarray, params)
  next_logits = generate.logits_at(model.apply)
  for i, prompt in enumerate(prompts):
    messages = ([{'role': 'system', 'content': system}] if system else []) + [
        {'role': 'user', 'content': prompt}]
    ids = chat.generation_prompt(pretrained.tokenizer,
                                 pretrained.chat_template, messages)
    out = generate.generate(model.apply, params, ids, max_new_tokens,
                            pretrained.eos_id, temperature,
                            jax.random.fold_in(jax.random.key(config.seed), i),
                            next_logits)
    yield prompt, pretrained.tokenizer.decode(out,
                                              skip_special_tokens=True).strip()

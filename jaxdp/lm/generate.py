"""Text from a (fine-tuned) causal LM: greedy or sampled, one sequence.

The sequence lives in a fixed-size buffer, so one compiled forward pass
serves every step; each step reruns the whole prefix (no key-value cache),
which is simple and fast enough for short answers from small models.
"""

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxdp.train import checkpointing
from jaxdp.models import lora


def logits_at(apply_fn):
  """jitted (params, tokens [1, T], position) -> logits at that position.

  Make it once per model and pass it to every `generate` call: each new one
  compiles again.
  """
  @jax.jit
  def next_logits(params, tokens, position):
    logits = apply_fn({'params': params}, tokens)
    return jax.lax.dynamic_index_in_dim(logits[0], position, keepdims=False)
  return next_logits


def generate(apply_fn, params, prompt: list, max_new_tokens: int,
             stop_id: int, temperature: float = 0.0,
             key: Optional[jax.Array] = None, next_logits=None) -> list:
  """New token ids after `prompt`, up to `stop_id` (included) or the limit.

  temperature 0 is greedy decoding; otherwise tokens are sampled from
  softmax(logits / temperature) with `key`. `next_logits`: a `logits_at`
  of `apply_fn` shared between calls (made here if not given).
  """
  length = -(-(len(prompt) + max_new_tokens) // 64) * 64
  buffer = np.zeros((1, length), np.int32)
  buffer[0, :len(prompt)] = prompt
  next_logits = next_logits or logits_at(apply_fn)

  out, position = [], len(prompt) - 1
  for i in range(max_new_tokens):
    logits = next_logits(params, jnp.asarray(buffer), position)
    if temperature > 0:
      token = int(jax.random.categorical(jax.random.fold_in(key, i),
                                         logits / temperature))
    else:
      token = int(jnp.argmax(logits))
    out.append(token)
    position += 1
    buffer[0, position] = token
    if token == stop_id:
      break
  return out


def trained_params(workdir: str, frozen):
  """The newest checkpoint's model merged with `frozen` (None: no checkpoint).

  The model is what training evaluated: the parameter average where the run
  kept one (optimizer.ema_decay > 0), else the parameters.
  """
  checkpointer = checkpointing.Checkpointer(workdir, None)
  latest = checkpointer.latest()
  if latest is None:
    return None
  state = checkpointer.restore_arrays(latest)
  trained = (state['ema_params'] if state.get('ema_params') is not None
             else state['params'])
  trained = jax.tree_util.tree_map(jnp.asarray, trained)
  return lora.merge(frozen, trained)

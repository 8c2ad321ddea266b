"""A tiny randomly initialised Llama with a small BPE tokenizer, for tests.

Same architecture and code path as a pretrained model (`Pretrained`), small
enough to train from scratch in minutes on a CPU. Its tokenizer is a byte-level
BPE of `vocab_size` tokens (digits split one by one, like SmolLM2's) trained
on *public* text: synthetic support conversations drawn with their own seed,
never the training set (a tokenizer fitted to private data would leak its
frequent strings, a repeated canary first of all). The chat template is
ChatML, as SmolLM2's.
"""

import jax
import numpy as np
import tokenizers
from tokenizers import decoders
from tokenizers import models
from tokenizers import pre_tokenizers
from tokenizers import trainers

from jaxdp.lm import chat
from jaxdp.lm import synthetic_conversations
from jaxdp.lm.pretrained import Pretrained
from jaxdp.models import llama

SPECIALS = ('<|endoftext|>', '<|im_start|>', '<|im_end|>')
CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + "
          "'\\n' + message['content'] + '<|im_end|>\\n' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
          "{% endif %}")
# The public corpus's seed: any seed but the training set's (0).
PUBLIC_SEED = 1_000_003


def public_tokenizer(vocab_size: int = 1024) -> tokenizers.Tokenizer:
  """Byte-level BPE trained on public synthetic conversations."""
  tokenizer = tokenizers.Tokenizer(models.BPE())
  tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
      pre_tokenizers.Digits(individual_digits=True),
      pre_tokenizers.ByteLevel(add_prefix_space=False)])
  tokenizer.decoder = decoders.ByteLevel()
  public, _, _ = synthetic_conversations.make(
      num_users=200, num_test_users=0, repeats=(), num_controls=0,
      seed=PUBLIC_SEED)
  texts = [chat.render(CHATML, c['messages']) for c in public]
  trainer = trainers.BpeTrainer(
      vocab_size=vocab_size, special_tokens=list(SPECIALS),
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
      show_progress=False)
  tokenizer.train_from_iterator(texts, trainer)
  return tokenizer


def tiny_pretrained(dim: int = 64, num_layers: int = 2, num_heads: int = 4,
                    num_kv_heads: int = 2, seed: int = 0,
                    max_length: int = 512) -> Pretrained:
  """Random weights in the layout of a loaded checkpoint."""
  tokenizer = public_tokenizer()
  config = llama.LlamaConfig(
      vocab_size=tokenizer.get_vocab_size(), dim=dim, num_layers=num_layers,
      num_heads=num_heads, num_kv_heads=num_kv_heads, hidden_dim=4 * dim,
      tie_embeddings=False, max_length=max_length)
  config.check()
  params = llama.init_params(llama.LlamaLM(config), jax.random.key(seed))
  params = jax.tree_util.tree_map(np.asarray, params)
  return Pretrained(config, params, tokenizer, CHATML,
                    tokenizer.token_to_id('<|im_end|>'),
                    f'random tiny Llama (dim {dim}, {num_layers} layers, '
                    f'seed {seed})')

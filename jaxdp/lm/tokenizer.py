"""Tokenizers rebuilt from a checkpoint's own files, with `tokenizers`.

A GGUF file carries its tokenizer as metadata: the vocabulary, the BPE merges,
each token's type, and a name for the pre-tokenizer's splitting rule. For
byte-level BPE models (`tokenizer.ggml.model = gpt2`) whose splitting rule
is known here (SmolLM2's `smollm`, GPT-2's) this is enough to rebuild the
exact Hugging Face tokenizer; other rules are refused by name. A Hugging Face
directory ships it whole as `tokenizer.json`.
"""

import os

import tokenizers
from tokenizers import decoders
from tokenizers import models
from tokenizers import pre_tokenizers

# llama.cpp's name for the splitting rule -> whether digits are split one by
# one before the GPT-2 byte-level split ("smollm": yes, as its tokenizer.json).
_DIGITS_SPLIT = {'smollm': True, 'gpt-2': False, 'default': False}
_CONTROL = 3  # llama.cpp's token type of special tokens (<|im_start|>, ...).


def from_gguf_metadata(tokens: list, merges: list, token_types: list,
                       pre: str) -> tokenizers.Tokenizer:
  """The byte-level BPE tokenizer a GGUF file describes."""
  if pre not in _DIGITS_SPLIT:
    raise ValueError(f'tokenizer.ggml.pre={pre!r} is not a splitting rule '
                     f'jaxdp knows (known: {", ".join(_DIGITS_SPLIT)})')
  vocab = {token: i for i, token in enumerate(tokens)}
  bpe = models.BPE(vocab=vocab, merges=[tuple(m.split(' ', 1)) for m in merges],
                   fuse_unk=False)
  tokenizer = tokenizers.Tokenizer(bpe)
  split = [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
  if _DIGITS_SPLIT[pre]:
    split.insert(0, pre_tokenizers.Digits(individual_digits=True))
  tokenizer.pre_tokenizer = pre_tokenizers.Sequence(split)
  tokenizer.decoder = decoders.ByteLevel()
  specials = [tokenizers.AddedToken(t, special=True, normalized=False)
              for t, kind in zip(tokens, token_types) if kind == _CONTROL]
  tokenizer.add_special_tokens(specials)
  return tokenizer


def from_directory(directory: str) -> tokenizers.Tokenizer:
  """`tokenizer.json` of a Hugging Face model directory."""
  return tokenizers.Tokenizer.from_file(os.path.join(directory,
                                                     'tokenizer.json'))

"""Reads a Llama-architecture GGUF file (llama.cpp's format) into jaxdp.

Quantised tensors (Q4_1, Q8_0, ...) are dequantised to float32 by the `gguf`
package on load; the model then runs in floating point. Two layout facts:

* GGUF lists a matrix's shape as (in, out) but stores it row-major as
  PyTorch's (out, in) weight, so `kernel = weight.T`.
* llama.cpp's converter permutes the rows of the query and key projections
  within each head so that rotary embeddings rotate adjacent dimensions;
  `unpermute_rotary` restores the half-split order `models.llama` uses.
"""

import numpy as np

from jaxdp.lm import weight_tree
from jaxdp.models.llama import LlamaConfig

_PROJECTIONS = {'attn_q': ('attn', 'q'), 'attn_k': ('attn', 'k'),
                'attn_v': ('attn', 'v'), 'attn_output': ('attn', 'o'),
                'ffn_gate': ('mlp', 'gate'), 'ffn_up': ('mlp', 'up'),
                'ffn_down': ('mlp', 'down')}
_NORMS = {'attn_norm': 'attn_norm', 'ffn_norm': 'mlp_norm'}


def unpermute_rotary(weight: np.ndarray, num_heads: int) -> np.ndarray:
  """Inverse of llama.cpp's row permutation of a q or k weight [out, in]."""
  out = weight.shape[0]
  return (weight.reshape(num_heads, out // num_heads // 2, 2, -1)
          .swapaxes(1, 2).reshape(weight.shape))


def permute_rotary(weight: np.ndarray, num_heads: int) -> np.ndarray:
  """llama.cpp's permutation (to write test files in its layout)."""
  out = weight.shape[0]
  return (weight.reshape(num_heads, 2, out // num_heads // 2, -1)
          .swapaxes(1, 2).reshape(weight.shape))


def _field(reader, name, default=None):
  field = reader.fields.get(name)
  if field is None:
    if default is None:
      raise ValueError(f'the GGUF file has no {name!r} field')
    return default
  return field.contents()


def read_config(reader, max_length: int) -> LlamaConfig:
  arch = _field(reader, 'general.architecture')
  if arch != 'llama':
    raise ValueError(f'general.architecture is {arch!r}; jaxdp reads llama')
  names = {t.name for t in reader.tensors}
  scaling = reader.fields.get('llama.rope.scaling.type')
  if 'rope_freqs.weight' in names or (
      scaling is not None and scaling.contents() not in ('none', '')):
    raise ValueError('the GGUF file scales its rotary frequencies (Llama '
                     '3.1+); jaxdp\'s rotary embeddings have no scaling')
  tokens = _field(reader, 'tokenizer.ggml.tokens')
  config = LlamaConfig(
      vocab_size=int(_field(reader, 'llama.vocab_size', len(tokens))),
      dim=int(_field(reader, 'llama.embedding_length')),
      num_layers=int(_field(reader, 'llama.block_count')),
      num_heads=int(_field(reader, 'llama.attention.head_count')),
      num_kv_heads=int(_field(reader, 'llama.attention.head_count_kv')),
      hidden_dim=int(_field(reader, 'llama.feed_forward_length')),
      rope_theta=float(_field(reader, 'llama.rope.freq_base', 10000.0)),
      norm_eps=float(_field(reader,
                            'llama.attention.layer_norm_rms_epsilon')),
      tie_embeddings='output.weight' not in names,
      max_length=min(max_length,
                     int(_field(reader, 'llama.context_length', max_length))))
  config.check()
  return config


def read_params(reader, config: LlamaConfig, dtype=np.float32) -> dict:
  """The model's parameters (no adapters) as a nested dict of NumPy arrays."""
  import gguf  # pylint: disable=g-import-not-at-top
  params: dict = {}
  put = lambda path, value: weight_tree.put(params, path, value, dtype)

  for tensor in reader.tensors:
    weight = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
    name = tensor.name.removesuffix('.weight')
    if name == 'token_embd':
      put(('embed', 'embedding'), weight)
    elif name == 'output_norm':
      put(('final_norm', 'scale'), weight)
    elif name == 'output':
      put(('lm_head', 'kernel'), weight.T)
    elif name.startswith('blk.'):
      _, index, part = name.split('.', 2)
      layer = f'layer_{int(index)}'
      if part in _NORMS:
        put((layer, _NORMS[part], 'scale'), weight)
      elif part in _PROJECTIONS:
        if part == 'attn_q':
          weight = unpermute_rotary(weight, config.num_heads)
        elif part == 'attn_k':
          weight = unpermute_rotary(weight, config.num_kv_heads)
        put((layer,) + _PROJECTIONS[part] + ('kernel',), weight.T)
      else:
        raise ValueError(f'unexpected tensor {tensor.name!r} in the GGUF file')
    else:
      raise ValueError(f'unexpected tensor {tensor.name!r} in the GGUF file')
  return params


def read_tokenizer_fields(reader) -> dict:
  """What `tokenizer.from_gguf_metadata` and the chat template need."""
  model = _field(reader, 'tokenizer.ggml.model')
  if model != 'gpt2':
    raise ValueError(f'tokenizer.ggml.model is {model!r}; jaxdp rebuilds '
                     'byte-level BPE (gpt2) tokenizers only')
  return dict(
      tokens=list(_field(reader, 'tokenizer.ggml.tokens')),
      merges=list(_field(reader, 'tokenizer.ggml.merges')),
      token_types=list(_field(reader, 'tokenizer.ggml.token_type')),
      pre=_field(reader, 'tokenizer.ggml.pre', 'default'),
      chat_template=_field(reader, 'tokenizer.chat_template', ''),
      bos_id=int(_field(reader, 'tokenizer.ggml.bos_token_id', -1)),
      eos_id=int(_field(reader, 'tokenizer.ggml.eos_token_id')))

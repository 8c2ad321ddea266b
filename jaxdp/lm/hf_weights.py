"""Reads a Llama-architecture Hugging Face directory into jaxdp.

The directory holds `config.json`, one or more `*.safetensors` files and
`tokenizer.json` (optionally `tokenizer_config.json` with the chat template),
as `save_pretrained` writes them. PyTorch stores a projection as weight
[out, in]; Flax's kernel is its transpose.
"""

import glob
import json
import os

import numpy as np

from jaxdp.lm import weight_tree
from jaxdp.models.llama import LlamaConfig

_PROJECTIONS = {'self_attn.q_proj': ('attn', 'q'),
                'self_attn.k_proj': ('attn', 'k'),
                'self_attn.v_proj': ('attn', 'v'),
                'self_attn.o_proj': ('attn', 'o'),
                'mlp.gate_proj': ('mlp', 'gate'), 'mlp.up_proj': ('mlp', 'up'),
                'mlp.down_proj': ('mlp', 'down')}
_NORMS = {'input_layernorm': 'attn_norm',
          'post_attention_layernorm': 'mlp_norm'}


def read_config(directory: str, max_length: int) -> LlamaConfig:
  with open(os.path.join(directory, 'config.json')) as f:
    hf = json.load(f)
  if hf.get('model_type', 'llama') != 'llama':
    raise ValueError(f'config.json model_type is {hf["model_type"]!r}; jaxdp '
                     'reads llama')
  if hf.get('rope_scaling'):
    raise ValueError(f'config.json has rope_scaling {hf["rope_scaling"]}; '
                     'jaxdp\'s rotary embeddings have no scaling (Llama 3.1+ '
                     'checkpoints are not supported)')
  config = LlamaConfig(
      vocab_size=hf['vocab_size'], dim=hf['hidden_size'],
      num_layers=hf['num_hidden_layers'],
      num_heads=hf['num_attention_heads'],
      num_kv_heads=hf.get('num_key_value_heads', hf['num_attention_heads']),
      hidden_dim=hf['intermediate_size'],
      rope_theta=float(hf.get('rope_theta', 10000.0)),
      norm_eps=float(hf.get('rms_norm_eps', 1e-5)),
      tie_embeddings=bool(hf.get('tie_word_embeddings', False)),
      max_length=min(max_length, hf.get('max_position_embeddings',
                                        max_length)))
  config.check()
  return config


def read_params(directory: str, config: LlamaConfig, dtype=np.float32) -> dict:
  """The model's parameters (no adapters) as a nested dict of NumPy arrays."""
  # The flax reader knows bfloat16, the usual dtype of released checkpoints
  # (safetensors' NumPy reader does not).
  from safetensors import safe_open  # pylint: disable=g-import-not-at-top
  files = sorted(glob.glob(os.path.join(directory, '*.safetensors')))
  if not files:
    raise ValueError(f'{directory} has no *.safetensors file')
  params: dict = {}
  put = lambda path, value: weight_tree.put(params, path, value, dtype)

  for file in files:
    with safe_open(file, framework='flax') as tensors:
      loaded = {name: np.asarray(tensors.get_tensor(name).astype(np.float32))
                for name in tensors.keys()}
    for name, weight in loaded.items():
      name = name.removesuffix('.weight')
      if name == 'model.embed_tokens':
        put(('embed', 'embedding'), weight)
      elif name == 'model.norm':
        put(('final_norm', 'scale'), weight)
      elif name == 'lm_head':
        if not config.tie_embeddings:
          put(('lm_head', 'kernel'), weight.T)
      elif name.startswith('model.layers.'):
        index, part = name.removeprefix('model.layers.').split('.', 1)
        layer = f'layer_{int(index)}'
        if part in _NORMS:
          put((layer, _NORMS[part], 'scale'), weight)
        elif part in _PROJECTIONS:
          put((layer,) + _PROJECTIONS[part] + ('kernel',), weight.T)
        elif not part.endswith('rotary_emb.inv_freq'):
          raise ValueError(f'unexpected tensor {name!r} in {file}')
      else:
        raise ValueError(f'unexpected tensor {name!r} in {file}')
  return params


def read_chat_fields(directory: str, tokenizer) -> dict:
  """Chat template and special token ids from `tokenizer_config.json`."""
  path = os.path.join(directory, 'tokenizer_config.json')
  settings = {}
  if os.path.exists(path):
    with open(path) as f:
      settings = json.load(f)
  def token_id(name):
    token = settings.get(name)
    if isinstance(token, dict):  # An AddedToken written out in full.
      token = token.get('content')
    found = tokenizer.token_to_id(token) if isinstance(token, str) else None
    return -1 if found is None else found
  return dict(chat_template=settings.get('chat_template') or '',
              bos_id=token_id('bos_token'), eos_id=token_id('eos_token'))

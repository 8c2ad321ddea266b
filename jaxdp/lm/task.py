"""The language-model fine-tuning task: a pretrained Llama on conversations.

One training example is one privacy unit (a conversation, or a user's packed
conversations; `conversations.py`). Its loss is the mean next-token
cross-entropy over its learned (assistant) tokens, so every unit weighs the
same before clipping whatever its length. Held-out loss and accuracy are
per token, over the learned tokens of the held-out conversations.

With `lm.lora_rank` r > 0 only the adapters are trained (and so clipped,
noised and checkpointed); the pretrained weights are frozen, optionally in
bfloat16. With r = 0 every weight is trained.
"""

import functools
import hashlib

import jax
import jax.numpy as jnp
import numpy as np

from jaxdp import models
from jaxdp.errors import ConfigError
from jaxdp.lm import conversations
from jaxdp.lm import pretrained as pretrained_lib
from jaxdp.lm import synthetic_conversations
from jaxdp.lm import tiny
from jaxdp.models import lora
from jaxdp.models import llama
from jaxdp.tasks.base import Task
from jaxdp.train import step as steps

DATASETS = ('synthetic_support', 'chat_jsonl')
TINY = 'tiny'
_DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


def token_losses(apply_fn, params, tokens, segments):
  """Next-token log-likelihoods [n, T-1] of `tokens` (row-wise)."""
  logits = apply_fn({'params': params}, tokens[:, :-1], segments[:, :-1])
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32))
  picked = jnp.take_along_axis(log_probs, tokens[:, 1:, None], axis=-1)
  return picked[..., 0], jnp.argmax(logits, -1) == tokens[:, 1:]


def unit_loss(apply_fn):
  """loss(params, (tokens, learned, segments)) -> [n] mean NLL per row."""
  def loss(params, inputs):
    tokens, learned, segments = inputs
    log_likelihood, _ = token_losses(apply_fn, params, tokens, segments)
    weights = learned[:, 1:].astype(jnp.float32)
    return -jnp.sum(log_likelihood * weights, axis=1) / jnp.maximum(
        jnp.sum(weights, axis=1), 1.0)
  return loss


def check_fields(config) -> None:
  """ConfigError for lm.* settings that cannot work (before loading)."""
  lm = config.lm
  if not (isinstance(lm.max_length, int) and lm.max_length >= 8):
    raise ConfigError('lm.max_length', f'must be an integer >= 8, got '
                      f'{lm.max_length!r}', 'e.g. lm.max_length=256')
  if not (isinstance(lm.lora_rank, int) and lm.lora_rank >= 0):
    raise ConfigError('lm.lora_rank', f'must be an integer >= 0, got '
                      f'{lm.lora_rank!r}', 'e.g. 8, or 0 for full '
                      'fine-tuning')
  if lm.privacy_unit not in conversations.UNITS:
    raise ConfigError('lm.privacy_unit', f'unknown unit {lm.privacy_unit!r}',
                      f'use one of {", ".join(conversations.UNITS)}')
  unknown = set(lm.lora_targets) - set(llama.PROJECTIONS)
  if unknown or (lm.lora_rank and not lm.lora_targets):
    raise ConfigError('lm.lora_targets', f'{tuple(lm.lora_targets)} names '
                      f'{sorted(unknown) or "no projection"}',
                      f'use a non-empty subset of {llama.PROJECTIONS}')
  if lm.base_dtype not in _DTYPES:
    raise ConfigError('lm.base_dtype', f'unknown dtype {lm.base_dtype!r}',
                      f'use one of {", ".join(_DTYPES)}')
  if lm.base_dtype != 'float32' and not lm.lora_rank:
    raise ConfigError('lm.base_dtype', 'full fine-tuning trains every '
                      'weight, so none is frozen in bfloat16',
                      'use lm.base_dtype=float32, or LoRA (lm.lora_rank > 0)')
  if config.data.name not in DATASETS:
    raise ConfigError('data.name', f'{config.data.name!r} is not a '
                      'conversation dataset', f'use one of '
                      f'{", ".join(DATASETS)} with task=language_model')
  for field in ('pca_components', 'normalization_noise_multiplier'):
    if config.dp[field]:
      raise ConfigError(f'dp.{field}', 'private releases of image '
                        'statistics do not apply to language models',
                        f'set dp.{field}=0 with task=language_model')
  if config.data.augmult:
    raise ConfigError('data.augmult', 'augmentation is for images',
                      'set data.augmult=0 with task=language_model')


def load_model(config) -> pretrained_lib.Pretrained:
  """The pretrained model `config.lm.pretrained` names."""
  if config.lm.pretrained == TINY:
    return tiny.tiny_pretrained(max_length=config.lm.max_length)
  try:
    return pretrained_lib.load_pretrained(config.lm.pretrained,
                                          config.lm.max_length)
  except (ValueError, KeyError, OSError) as e:
    raise ConfigError('lm.pretrained', f'cannot load {config.lm.pretrained!r}'
                      f' ({type(e).__name__}: {e})', 'use a llama-architecture'
                      ' .gguf file or Hugging Face directory (see '
                      'jaxdp/lm/pretrained.py)') from e


def load_conversations(config, model: pretrained_lib.Pretrained):
  if config.data.name == 'synthetic_support':
    train, test, _ = synthetic_conversations.make()
    source = 'synthetic support conversations (jaxdp, seed 0)'
  else:
    train, test = conversations.read_folder(config.data.data_dir)
    source = f'JSONL files in {config.data.data_dir}'
  if not model.chat_template:
    raise ConfigError('lm.pretrained', f'{config.lm.pretrained} ships no chat '
                      'template', 'use a checkpoint with a chat template '
                      '(tokenizer.chat_template or tokenizer_config.json)')
  return conversations.tokenize(train, test, model.tokenizer,
                                model.chat_template, config.lm.max_length,
                                config.lm.privacy_unit, config.data.name,
                                source)


def build_model(config, model_config: llama.LlamaConfig) -> llama.LlamaLM:
  lm = config.lm
  return llama.LlamaLM(model_config, lora_rank=lm.lora_rank,
                       lora_alpha=lm.lora_alpha,
                       lora_targets=tuple(lm.lora_targets))


def with_adapters(model: llama.LlamaLM, weights: dict, key) -> tuple:
  """(adapters, frozen): fresh adapters of `model` over loaded `weights`."""
  base = jax.tree_util.tree_map(jnp.asarray, weights)
  shapes = jax.eval_shape(lambda k: llama.init_params(model, k), key)
  frozen, adapters = lora.split_adapters(lora.attach_base(
      shapes, base, lora.init_adapters(shapes, key)))
  return adapters, frozen


def initial_params(config, model: llama.LlamaLM, weights: dict, key):
  """(trainable, frozen or None): the loaded weights plus fresh adapters."""
  if not config.lm.lora_rank:
    return jax.tree_util.tree_map(jnp.asarray, weights), None
  adapters, frozen = with_adapters(model, weights, key)
  dtype = _DTYPES[config.lm.base_dtype]
  return adapters, jax.tree_util.tree_map(lambda x: x.astype(dtype), frozen)


def _eval_sums(apply_fn):
  @jax.jit
  def sums(params, tokens, learned, segments, real):
    log_likelihood, correct = token_losses(apply_fn, params, tokens, segments)
    weights = learned[:, 1:] & real[:, None]
    return (-jnp.sum(jnp.where(weights, log_likelihood, 0.0)),
            jnp.sum(correct & weights), jnp.sum(weights))
  return sums


def evaluate_rows(sums, params, rows: conversations.TokenRows,
                  batch_size: int, placement):
  """Per-token held-out (loss, accuracy) over `rows`' learned tokens."""
  devices = placement.num_devices
  size = -(-min(batch_size, len(rows)) // devices) * devices
  loss, correct, count = steps.summed_over_batches(
      lambda *batch: sums(params, *batch), len(rows), rows.take, size,
      placement)
  return loss / max(count, 1.0), correct / max(count, 1.0)


def _no_releases(dp, seed):
  """Never reached: check_fields refuses releases for language models."""
  del seed
  raise ConfigError('dp.pca_components', 'private releases apply to images '
                    f'only (dp.pca_components={dp.pca_components})',
                    'set dp.pca_components=0 and '
                    'dp.normalization_noise_multiplier=0')


def build(config) -> Task:
  """Loads the pretrained model and the conversations of `config`."""
  check_fields(config)
  pretrained = load_model(config)
  dataset = load_conversations(config, pretrained)
  model = build_model(config, pretrained.config)
  models.check_no_example_mixing(model, np.zeros((1, 8), np.int32))
  sums = _eval_sums(model.apply)

  def train_inputs(indices, mask, slots, execution):
    del slots, execution
    tokens, learned, segments = dataset.train.take(indices)
    return (np.where(mask[:, None], tokens, 0),
            learned & mask[:, None], np.where(mask[:, None], segments, 0))

  digest = hashlib.sha256(dataset.fingerprint().encode())
  for array in (dataset.test.tokens, dataset.test.learned):
    digest.update(np.ascontiguousarray(array).tobytes())
  tokens = int((dataset.train.segments > 0).sum())
  return Task(
      name=dataset.name, source=dataset.source, num_train=dataset.num_train,
      num_test=len(dataset.test), model=model,
      init=functools.partial(initial_params, config, model,
                             pretrained.params),
      batch_loss=unit_loss(model.apply), train_inputs=train_inputs,
      evaluate=lambda params, placement: evaluate_rows(
          sums, params, dataset.test, config.eval.batch_size, placement),
      fingerprint=dataset.fingerprint,
      digest=lambda: int(digest.hexdigest()[:32], 16),
      with_releases=_no_releases,
      results={'model': config.lm.pretrained, 'privacy_unit': dataset.unit,
               'lora_rank': config.lm.lora_rank,
               # Exact counts over the training data, for the operator: not
               # covered by the guarantee (do not publish them with it).
               'non_private_data_statistics': {
                   'train_conversations': dataset.train_conversations,
                   'conversations_left_out': dataset.left_out,
                   'train_tokens': tokens}},
      frozen_note=f'{pretrained.source}, {config.lm.base_dtype}')

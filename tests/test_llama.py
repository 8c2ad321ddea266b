"""The Llama model against a NumPy reference, its weight loaders and LoRA."""

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdp import clipping
from jaxdp.clipping import fast as fast_clipping
from jaxdp.lm import gguf_weights
from jaxdp.lm import pretrained
from jaxdp.lm import task as lm_task
from jaxdp.lm import tiny
from jaxdp.models import llama
from jaxdp.models import lora

CONFIG = llama.LlamaConfig(vocab_size=40, dim=16, num_layers=2, num_heads=4,
                           num_kv_heads=2, hidden_dim=24, rope_theta=500.0,
                           norm_eps=1e-5, tie_embeddings=True)


def _reference_logits(p, tokens, c):
  """Hugging Face's Llama forward pass, written out in NumPy (float64)."""
  p = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float64), p)
  d, group = c.head_dim, c.num_heads // c.num_kv_heads
  rms = lambda x, w: x / np.sqrt(np.mean(x * x, -1, keepdims=True) +
                                 c.norm_eps) * w
  inv_freq = 1.0 / c.rope_theta ** (np.arange(0, d, 2) / d)
  angles = np.arange(len(tokens))[:, None] * inv_freq[None]
  cos = np.cos(np.concatenate([angles, angles], -1))[:, None]
  sin = np.sin(np.concatenate([angles, angles], -1))[:, None]
  rotate = lambda x: x * cos + np.concatenate(
      [-x[..., d // 2:], x[..., :d // 2]], -1) * sin
  h = p['embed']['embedding'][tokens]
  t = len(tokens)
  for i in range(c.num_layers):
    layer = p[f'layer_{i}']
    x = rms(h, layer['attn_norm']['scale'])
    q = rotate((x @ layer['attn']['q']['kernel']).reshape(t, c.num_heads, d))
    k = rotate((x @ layer['attn']['k']['kernel']).reshape(t, c.num_kv_heads,
                                                          d))
    v = (x @ layer['attn']['v']['kernel']).reshape(t, c.num_kv_heads, d)
    out = np.zeros((t, c.num_heads, d))
    for head in range(c.num_heads):
      scores = q[:, head] @ k[:, head // group].T / np.sqrt(d)
      scores = np.where(np.tril(np.ones((t, t))) > 0, scores, -np.inf)
      weights = np.exp(scores - scores.max(-1, keepdims=True))
      weights /= weights.sum(-1, keepdims=True)
      out[:, head] = weights @ v[:, head // group]
    h = h + out.reshape(t, -1) @ layer['attn']['o']['kernel']
    x = rms(h, layer['mlp_norm']['scale'])
    gate = x @ layer['mlp']['gate']['kernel']
    up = x @ layer['mlp']['up']['kernel']
    h = h + (gate / (1 + np.exp(-gate)) * up) @ layer['mlp']['down']['kernel']
  return rms(h, p['final_norm']['scale']) @ p['embed']['embedding'].T


def _random_params(config, seed=0):
  params = llama.init_params(llama.LlamaLM(config), jax.random.key(seed))
  # Norm scales away from 1, so that a swapped norm would show.
  return jax.tree_util.tree_map_with_path(
      lambda path, x: x + 0.1 * jax.random.normal(
          jax.random.key(len(str(path))), x.shape)
      if 'norm' in str(path) else x, params)


def test_llama_matches_numpy_reference():
  params = _random_params(CONFIG)
  tokens = np.array([3, 17, 5, 5, 39, 0, 12], np.int32)
  ours = jax.jit(llama.LlamaLM(CONFIG).apply)({'params': params},
                                              tokens[None])[0]
  np.testing.assert_allclose(ours, _reference_logits(params, tokens, CONFIG),
                             rtol=2e-4, atol=2e-4)


def test_packed_segments_equal_separate_rows():
  """Two sequences packed in one row give each its own unpacked logits."""
  apply = jax.jit(llama.LlamaLM(CONFIG).apply)
  params = {'params': _random_params(CONFIG)}
  a, b = np.array([1, 2, 3, 4, 5, 6, 7, 8]), np.array([7, 8, 9, 1, 2, 3, 4, 5])
  packed = np.concatenate([a[:4], b[:3], [0]])[None]
  segments = np.array([[1, 1, 1, 1, 2, 2, 2, 0]])
  out = apply(params, packed, segments)[0]
  # The same shapes throughout: one compilation (causality makes the tails
  # of a and b irrelevant to their first tokens).
  np.testing.assert_allclose(out[:4], apply(params, a[None], None)[0][:4],
                             atol=1e-5)
  np.testing.assert_allclose(out[4:7], apply(params, b[None], None)[0][:3],
                             atol=1e-5)


def test_rotary_permutation_round_trip():
  w = np.random.default_rng(0).normal(size=(12, 5))
  np.testing.assert_array_equal(
      gguf_weights.unpermute_rotary(gguf_weights.permute_rotary(w, 3), 3), w)


def _write_gguf(path, config, params, tokenizer, template):
  import gguf  # pylint: disable=g-import-not-at-top
  writer = gguf.GGUFWriter(path, 'llama')
  writer.add_block_count(config.num_layers)
  writer.add_context_length(config.max_length)
  writer.add_embedding_length(config.dim)
  writer.add_feed_forward_length(config.hidden_dim)
  writer.add_head_count(config.num_heads)
  writer.add_head_count_kv(config.num_kv_heads)
  writer.add_rope_freq_base(config.rope_theta)
  writer.add_layer_norm_rms_eps(config.norm_eps)
  writer.add_vocab_size(config.vocab_size)
  model = json.loads(tokenizer.to_str())['model']
  vocab = sorted(model['vocab'].items(), key=lambda kv: kv[1])
  specials = {t.content for t in
              tokenizer.get_added_tokens_decoder().values()}
  merges = [m if isinstance(m, str) else ' '.join(m) for m in model['merges']]
  writer.add_tokenizer_model('gpt2')
  writer.add_tokenizer_pre('smollm')
  writer.add_token_list([t for t, _ in vocab])
  writer.add_token_types([3 if t in specials else 1 for t, _ in vocab])
  writer.add_token_merges(merges)
  writer.add_eos_token_id(tokenizer.token_to_id('<|im_end|>'))
  writer.add_chat_template(template)
  p = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float32), params)
  writer.add_tensor('token_embd.weight', p['embed']['embedding'])
  writer.add_tensor('output_norm.weight', p['final_norm']['scale'])
  names = {('attn', 'q'): 'attn_q', ('attn', 'k'): 'attn_k',
           ('attn', 'v'): 'attn_v', ('attn', 'o'): 'attn_output',
           ('mlp', 'gate'): 'ffn_gate', ('mlp', 'up'): 'ffn_up',
           ('mlp', 'down'): 'ffn_down'}
  for i in range(config.num_layers):
    layer = p[f'layer_{i}']
    writer.add_tensor(f'blk.{i}.attn_norm.weight', layer['attn_norm']['scale'])
    writer.add_tensor(f'blk.{i}.ffn_norm.weight', layer['mlp_norm']['scale'])
    for (block, name), gguf_name in names.items():
      weight = layer[block][name]['kernel'].T
      if gguf_name == 'attn_q':
        weight = gguf_weights.permute_rotary(weight, config.num_heads)
      if gguf_name == 'attn_k':
        weight = gguf_weights.permute_rotary(weight, config.num_kv_heads)
      writer.add_tensor(f'blk.{i}.{gguf_name}.weight',
                        np.ascontiguousarray(weight))
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()


def _write_hf(directory, config, params, tokenizer, template,
              dtype=jnp.float32):
  """Written as `save_pretrained` would (bfloat16, as most releases, or f32)."""
  from safetensors.flax import save_file  # pylint: disable=g-import-not-at-top
  os.makedirs(directory)
  p = jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype), params)
  tensors = {'model.embed_tokens.weight': p['embed']['embedding'],
             'model.norm.weight': p['final_norm']['scale']}
  names = {('attn', 'q'): 'self_attn.q_proj', ('attn', 'k'): 'self_attn.k_proj',
           ('attn', 'v'): 'self_attn.v_proj', ('attn', 'o'): 'self_attn.o_proj',
           ('mlp', 'gate'): 'mlp.gate_proj', ('mlp', 'up'): 'mlp.up_proj',
           ('mlp', 'down'): 'mlp.down_proj'}
  for i in range(config.num_layers):
    layer = p[f'layer_{i}']
    prefix = f'model.layers.{i}.'
    tensors[prefix + 'input_layernorm.weight'] = layer['attn_norm']['scale']
    tensors[prefix + 'post_attention_layernorm.weight'] = (
        layer['mlp_norm']['scale'])
    for (block, name), hf_name in names.items():
      tensors[f'{prefix}{hf_name}.weight'] = layer[block][name]['kernel'].T
  save_file(tensors, os.path.join(directory, 'model.safetensors'))
  with open(os.path.join(directory, 'config.json'), 'w') as f:
    json.dump({'model_type': 'llama', 'vocab_size': config.vocab_size,
               'hidden_size': config.dim,
               'num_hidden_layers': config.num_layers,
               'num_attention_heads': config.num_heads,
               'num_key_value_heads': config.num_kv_heads,
               'intermediate_size': config.hidden_dim,
               'rope_theta': config.rope_theta,
               'rms_norm_eps': config.norm_eps, 'tie_word_embeddings': True,
               'max_position_embeddings': config.max_length}, f)
  tokenizer.save(os.path.join(directory, 'tokenizer.json'))
  with open(os.path.join(directory, 'tokenizer_config.json'), 'w') as f:
    json.dump({'chat_template': template, 'eos_token': '<|im_end|>'}, f)


@pytest.fixture(scope='module')
def tiny_files(tmp_path_factory):
  """One random model written as a GGUF file and as a Hugging Face folder."""
  tokenizer = tiny.public_tokenizer(vocab_size=300)
  config = llama.LlamaConfig(
      vocab_size=tokenizer.get_vocab_size(), dim=32, num_layers=2,
      num_heads=4, num_kv_heads=2, hidden_dim=48, rope_theta=10000.0,
      tie_embeddings=True, max_length=128)
  params = _random_params(config, seed=3)
  root = tmp_path_factory.mktemp('weights')
  _write_gguf(str(root / 'tiny.gguf'), config, params, tokenizer,
              tiny.CHATML)
  _write_hf(str(root / 'hf'), config, params, tokenizer, tiny.CHATML)
  _write_hf(str(root / 'hf_bf16'), config, params, tokenizer, tiny.CHATML,
            jnp.bfloat16)
  return root, config, params, tokenizer


@pytest.mark.parametrize('layout', ['gguf', 'hf', 'hf_bf16'])
def test_loaders_recover_weights_and_tokenizer(tiny_files, layout):
  root, config, params, tokenizer = tiny_files
  path = str(root / ('tiny.gguf' if layout == 'gguf' else layout))
  loaded = pretrained.load_pretrained(path, max_length=128)
  if layout == 'hf_bf16':  # What was stored: the weights rounded to bf16.
    params = jax.tree_util.tree_map(
        lambda x: jnp.asarray(x, jnp.bfloat16).astype(jnp.float32), params)
  # GGUF stores ε in float32.
  assert loaded.config.norm_eps == pytest.approx(config.norm_eps, rel=1e-6)
  assert dataclasses.replace(loaded.config, norm_eps=config.norm_eps) == config
  jax.tree_util.tree_map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6),
      loaded.params, jax.tree_util.tree_map(np.asarray, params))
  text = 'Hi, this is Ada Berg. Account 4 8 2 9 1 7?<|im_end|>'
  assert (loaded.tokenizer.encode(text).ids == tokenizer.encode(text).ids)
  assert loaded.eos_id == tokenizer.token_to_id('<|im_end|>')
  assert loaded.chat_template == tiny.CHATML


def test_bad_pretrained_source_names_the_field(tmp_path):
  with pytest.raises(Exception, match='lm.pretrained'):
    pretrained.load_pretrained(str(tmp_path / 'nothing.bin'))


def test_lora_starts_as_the_base_model_and_trains_only_adapters():
  base_model = llama.LlamaLM(CONFIG)
  base = _random_params(CONFIG)
  lora_model = llama.LlamaLM(CONFIG, lora_rank=2, lora_alpha=4.0,
                             lora_targets=('q', 'v', 'down'))
  key = jax.random.key(1)
  shapes = jax.eval_shape(lambda k: llama.init_params(lora_model, k), key)
  frozen, adapters = lora.split_adapters(lora.attach_base(
      shapes, base, lora.init_adapters(shapes, key)))
  tokens = jnp.array([[1, 2, 3, 4, 5]])
  merged = lora.merge(frozen, adapters)
  np.testing.assert_allclose(
      jax.jit(lora_model.apply)({'params': merged}, tokens),
      jax.jit(base_model.apply)({'params': base}, tokens), atol=1e-6)
  paths = [jax.tree_util.keystr(p) for p, _ in
           jax.tree_util.tree_flatten_with_path(adapters)[0]]
  assert len(paths) == 2 * 3 * CONFIG.num_layers
  assert all('lora_' in p for p in paths)


@pytest.mark.parametrize('rank', [
    # Full fine-tuning: every layer kind here is also checked on its own in
    # test_fast_clipping.py; the whole model compiles for about a minute.
    pytest.param(0, marks=pytest.mark.slow), 2])
def test_fast_clipping_on_llama_equals_vmap(rank):
  """Per-unit norms and the clipped sum, packed rows and padding included."""
  config = llama.LlamaConfig(vocab_size=40, dim=16, num_layers=1,
                             num_heads=4, num_kv_heads=2, hidden_dim=24,
                             tie_embeddings=False)
  model = llama.LlamaLM(config, lora_rank=rank)
  params = llama.init_params(model, jax.random.key(0))
  params = jax.tree_util.tree_map(
      lambda x: x + 0.05 * jax.random.normal(jax.random.key(9), x.shape),
      params)  # Non-zero lora_up, so adapter gradients are all non-trivial.
  frozen, trainable = (lora.split_adapters(params) if rank else
                       (None, params))
  loss = lora.with_frozen(lm_task.unit_loss(model.apply), frozen)
  rng = np.random.default_rng(0)
  tokens = rng.integers(1, 40, (5, 12)).astype(np.int32)
  learned = rng.random((5, 12)) < 0.6
  segments = np.array([[1] * 12, [1] * 6 + [2] * 6, [1] * 9 + [0] * 3,
                       [1] * 12, [1] * 4 + [2] * 4 + [3] * 4], np.int32)
  batch = (tokens, learned, segments)
  mask = jnp.array([True, True, True, True, False])
  fast, fast_stats = jax.jit(fast_clipping.fast_clipped_chunk(loss, 0.05))(
      trainable, batch, mask)
  ref, ref_stats = jax.jit(clipping.vmap_clipped_chunk(loss, 0.05))(
      trainable, batch, mask)
  np.testing.assert_allclose(fast_stats.norms, ref_stats.norms, rtol=1e-4)
  jax.tree_util.tree_map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7),
      fast, ref)
  sites = fast_clipping.find_sites(loss, trainable, batch)
  covered = sum(np.prod(trainable_leaf.shape) for s in sites
                for trainable_leaf in fast_clipping._subtree(
                    trainable, s.path).values())
  total = sum(x.size for x in jax.tree_util.tree_leaves(trainable))
  # Everything trained takes the fast path except a tied output head.
  assert covered == total


def test_rotary_scaling_is_refused_by_name(tiny_files, tmp_path):
  """Llama 3.1+ scales rotary frequencies: refused, never loaded wrongly."""
  import shutil  # pylint: disable=g-import-not-at-top
  from configs import tiny_lm  # pylint: disable=g-import-not-at-top
  from jaxdp.errors import ConfigError  # pylint: disable=g-import-not-at-top
  root = tiny_files[0]
  folder = tmp_path / 'scaled'
  shutil.copytree(root / 'hf', folder)
  settings = json.loads((folder / 'config.json').read_text())
  settings['rope_scaling'] = {'rope_type': 'llama3', 'factor': 8.0}
  (folder / 'config.json').write_text(json.dumps(settings))
  config = tiny_lm.get_config()
  config.lm.pretrained = str(folder)
  with pytest.raises(ConfigError, match='lm.pretrained.*rope_scaling'):
    lm_task.load_model(config)

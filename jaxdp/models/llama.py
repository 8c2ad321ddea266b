"""A Llama-family causal language model in Flax (SmolLM2, Llama 2/3, ...).

Pre-norm blocks: RMSNorm → grouped-query self-attention with rotary position
embeddings → residual; RMSNorm → SwiGLU MLP → residual; a final RMSNorm and an
output head that is either its own matrix or the token embedding (tied).

Rotary embeddings use the "half-split" layout of the Hugging Face checkpoints:
dimension j of a head is rotated together with dimension j + head_dim / 2.
llama.cpp's GGUF files store the query and key projections permuted so that
adjacent dimensions pair up instead; `jaxdp.lm.gguf_weights` undoes that.

Every projection is a bias-free `nn.Dense` (or, with `lora_rank`, a LoRA layer
whose adapters are `nn.Dense`), so per-example clipping takes the fast path for
whatever is trained. Right padding needs no attention mask: a real token only
attends to earlier tokens, which are real too.
"""

import dataclasses
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdp.models.lora import dense_or_lora

# Projections that can carry LoRA adapters.
ATTENTION_PROJECTIONS = ('q', 'k', 'v', 'o')
MLP_PROJECTIONS = ('gate', 'up', 'down')
PROJECTIONS = ATTENTION_PROJECTIONS + MLP_PROJECTIONS


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
  """The architecture, as a checkpoint's metadata states it."""

  vocab_size: int
  dim: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  hidden_dim: int  # Width of the SwiGLU MLP.
  rope_theta: float = 10000.0
  norm_eps: float = 1e-5
  tie_embeddings: bool = True
  max_length: int = 2048  # Longest sequence the rotary table is built for.

  @property
  def head_dim(self) -> int:
    return self.dim // self.num_heads

  def check(self) -> None:
    if self.dim % self.num_heads or self.num_heads % self.num_kv_heads:
      raise ValueError(f'{self}: dim must split into num_heads heads, and '
                       'num_heads into num_kv_heads groups')
    if self.head_dim % 2:
      raise ValueError(f'{self}: rotary embeddings need an even head_dim')


def rotary_tables(head_dim: int, positions: jnp.ndarray, theta: float):
  """cos and sin [batch, length, head_dim] at `positions` (half-split)."""
  inv_freq = 1.0 / theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32)
                             / head_dim)
  angles = positions.astype(jnp.float32)[..., None] * inv_freq
  angles = jnp.concatenate([angles, angles], axis=-1)
  return jnp.cos(angles), jnp.sin(angles)


def apply_rotary(x: jnp.ndarray, cos: jnp.ndarray, sin: jnp.ndarray):
  """x [batch, length, heads, head_dim] rotated by position."""
  half = x.shape[-1] // 2
  rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
  return (x * cos[:, :, None, :] + rotated * sin[:, :, None, :]).astype(
      x.dtype)


def segment_positions(segments: jnp.ndarray) -> jnp.ndarray:
  """Each token's position within its segment (runs of equal ids) [b, t]."""
  t = jnp.arange(segments.shape[1])
  starts = jnp.concatenate(
      [jnp.ones_like(segments[:, :1], bool),
       segments[:, 1:] != segments[:, :-1]], axis=1)
  return t - jax.lax.cummax(jnp.where(starts, t, 0), axis=1)


class _Projecting(nn.Module):
  """A block whose projections get LoRA adapters where `lora_targets` say."""

  config: LlamaConfig
  lora_rank: int = 0
  lora_alpha: float = 1.0
  lora_targets: tuple = ()

  def _proj(self, features: int, name: str) -> nn.Module:
    """A bias-free projection, with rank-`lora_rank` adapters if targeted."""
    rank = self.lora_rank if name in self.lora_targets else 0
    return dense_or_lora(features, rank, name, self.lora_alpha, use_bias=False)


class Attention(_Projecting):

  @nn.compact
  def __call__(self, x: jnp.ndarray, segments: jnp.ndarray) -> jnp.ndarray:
    c = self.config
    batch, length, _ = x.shape
    d = c.head_dim
    q = self._proj(c.num_heads * d, 'q')(x).reshape(batch, length,
                                                    c.num_heads, d)
    k = self._proj(c.num_kv_heads * d, 'k')(x).reshape(batch, length,
                                                       c.num_kv_heads, d)
    v = self._proj(c.num_kv_heads * d, 'v')(x).reshape(batch, length,
                                                       c.num_kv_heads, d)
    cos, sin = rotary_tables(d, segment_positions(segments), c.rope_theta)
    q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
    # Grouped-query attention: each key/value head serves `group` query heads.
    group = c.num_heads // c.num_kv_heads
    q = q.reshape(batch, length, c.num_kv_heads, group, d)
    scores = jnp.einsum('btkgd,bskd->bkgts', q, k) / jnp.sqrt(d).astype(
        q.dtype)
    # Causal, and within the token's own segment (packed sequences).
    allowed = (jnp.tril(jnp.ones((length, length), bool))[None] &
               (segments[:, :, None] == segments[:, None, :]))
    scores = jnp.where(allowed[:, None, None], scores,
                       jnp.finfo(scores.dtype).min)
    weights = jax.nn.softmax(scores.astype(jnp.float32), axis=-1).astype(
        v.dtype)
    out = jnp.einsum('bkgts,bskd->btkgd', weights, v)
    return self._proj(c.dim, 'o')(out.reshape(batch, length, c.num_heads * d))


class MLP(_Projecting):

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    c = self.config
    gate = self._proj(c.hidden_dim, 'gate')(x)
    up = self._proj(c.hidden_dim, 'up')(x)
    return self._proj(c.dim, 'down')(nn.silu(gate) * up)


class Block(nn.Module):
  config: LlamaConfig
  lora_rank: int = 0
  lora_alpha: float = 1.0
  lora_targets: tuple = ()

  @nn.compact
  def __call__(self, x: jnp.ndarray, segments: jnp.ndarray) -> jnp.ndarray:
    c = self.config
    lora = dict(lora_rank=self.lora_rank, lora_alpha=self.lora_alpha,
                lora_targets=self.lora_targets)
    x = x + Attention(c, name='attn', **lora)(
        nn.RMSNorm(c.norm_eps, name='attn_norm')(x), segments)
    return x + MLP(c, name='mlp', **lora)(
        nn.RMSNorm(c.norm_eps, name='mlp_norm')(x))


class LlamaLM(nn.Module):
  """tokens [batch, length] int -> next-token logits [batch, length, vocab].

  `segments` [batch, length] (optional) packs several sequences in one row:
  a token attends only to earlier tokens with the same segment id, and its
  rotary position counts from the start of its segment.

  Parameters (without LoRA): `embed/embedding`, `layer_{i}/attn/{q,k,v,o}/
  kernel`, `layer_{i}/mlp/{gate,up,down}/kernel`, `layer_{i}/{attn,mlp}_norm/
  scale`, `final_norm/scale`, and `lm_head/kernel` unless tied. With
  `lora_rank` r > 0, each projection named in `lora_targets` becomes a
  `LoRADense` (`base/kernel` frozen, `lora_down`, `lora_up` trained).
  """

  config: LlamaConfig
  lora_rank: int = 0
  lora_alpha: float = 1.0
  lora_targets: tuple = PROJECTIONS
  # Computation dtype of the residual stream; None: float32.
  dtype: Optional[jnp.dtype] = None

  @nn.compact
  def __call__(self, tokens: jnp.ndarray,
               segments: Optional[jnp.ndarray] = None) -> jnp.ndarray:
    c = self.config
    if segments is None:
      segments = jnp.zeros_like(tokens)
    embed = nn.Embed(c.vocab_size, c.dim, name='embed')
    # float32 unless asked otherwise, also under bfloat16 frozen weights
    # (a layer computes in the wider of its input's and its weights' dtypes).
    x = embed(tokens).astype(self.dtype or jnp.float32)
    for i in range(c.num_layers):
      x = Block(c, self.lora_rank, self.lora_alpha, tuple(self.lora_targets),
                name=f'layer_{i}')(x, segments)
    x = nn.RMSNorm(c.norm_eps, name='final_norm')(x)
    if c.tie_embeddings:
      return embed.attend(x.astype(jnp.float32))
    return nn.Dense(c.vocab_size, use_bias=False, name='lm_head')(
        x).astype(jnp.float32)


def init_params(model: LlamaLM, key: jax.Array, length: int = 8):
  """Random parameters of `model` (a tiny model's, in tests)."""
  # Jitted: op-by-op initialisation of even a small model takes seconds.
  return jax.jit(model.init)(key, jnp.zeros((1, length), jnp.int32))['params']

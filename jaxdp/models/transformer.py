"""A small decoder-only (causal) transformer language model.

Pre-LayerNorm blocks of causal multi-head self-attention and a GELU MLP, learned
token and position embeddings, an untied output head. Every projection is an
`nn.Dense` on [batch, tokens, features], so the fast clipping path covers the
whole model. It exists to test and benchmark per-example clipping on sequence
models (and, with `lora_rank`, LoRA fine-tuning); the pretrained-model work
uses its own architecture.
"""

import flax.linen as nn
import jax.numpy as jnp

from jaxdp.models.lora import dense_or_lora


class CausalSelfAttention(nn.Module):
  """Multi-head attention where token t sees tokens ≤ t of its own sequence."""

  num_heads: int
  lora_rank: int = 0

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    batch, length, width = x.shape
    head = width // self.num_heads
    split = lambda y: jnp.reshape(y, (batch, length, self.num_heads, head))
    dense = lambda name: dense_or_lora(width, self.lora_rank, name)
    q = split(dense('query')(x))
    k = split(dense('key')(x))
    v = split(dense('value')(x))
    scores = jnp.einsum('bthd,bshd->bhts', q, k) / jnp.sqrt(head)
    causal = jnp.tril(jnp.ones((length, length), bool))
    scores = jnp.where(causal, scores, -1e9)
    out = jnp.einsum('bhts,bshd->bthd', nn.softmax(scores, axis=-1), v)
    return dense('out')(jnp.reshape(out, (batch, length, width)))


class Block(nn.Module):
  num_heads: int
  mlp_ratio: int = 4
  lora_rank: int = 0

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    x = x + CausalSelfAttention(self.num_heads, self.lora_rank)(
        nn.LayerNorm()(x))
    width = x.shape[-1]
    h = dense_or_lora(self.mlp_ratio * width, self.lora_rank, 'mlp_in')(
        nn.LayerNorm()(x))
    return x + dense_or_lora(width, self.lora_rank, 'mlp_out')(nn.gelu(h))


class TransformerLM(nn.Module):
  """tokens [batch, length] int -> next-token logits [batch, length, vocab]."""

  vocab_size: int
  max_length: int
  width: int = 64
  depth: int = 2
  num_heads: int = 4
  lora_rank: int = 0  # > 0: attention and MLP projections get LoRA adapters.

  @nn.compact
  def __call__(self, tokens: jnp.ndarray) -> jnp.ndarray:
    positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
    x = (nn.Embed(self.vocab_size, self.width, name='token_embed')(tokens) +
         nn.Embed(self.max_length, self.width, name='position_embed')(
             positions))
    for _ in range(self.depth):
      x = Block(self.num_heads, lora_rank=self.lora_rank)(x)
    return nn.Dense(self.vocab_size, name='head')(nn.LayerNorm()(x))


def next_token_loss(apply_fn):
  """Per-sequence mean next-token cross-entropy: loss(params, tokens) -> [n]."""
  def loss(params, tokens):
    logits = apply_fn({'params': params}, tokens[:, :-1])
    targets = tokens[:, 1:]
    log_probs = nn.log_softmax(logits)
    picked = jnp.take_along_axis(log_probs, targets[..., None], axis=-1)
    return -jnp.mean(picked[..., 0], axis=-1)
  return loss

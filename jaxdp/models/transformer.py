"""A small decoder-only (causal) transformer language model.

Pre-LayerNorm blocks of causal multi-head self-attention and a GELU MLP, learned
token and position embeddings, an untied output head. Every projection is an
`nn.Dense` on [batch, tokens, features], so the fast clipping path covers the
whole model. It exists to test and benchmark per-example clipping on sequence
models; the pretrained-model work uses its own architecture.
"""

import flax.linen as nn
import jax.numpy as jnp


class CausalSelfAttention(nn.Module):
  """Multi-head attention where token t sees tokens ≤ t of its own sequence."""

  num_heads: int

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    batch, length, width = x.shape
    head = width // self.num_heads
    split = lambda y: jnp.reshape(y, (batch, length, self.num_heads, head))
    q = split(nn.Dense(width, name='query')(x))
    k = split(nn.Dense(width, name='key')(x))
    v = split(nn.Dense(width, name='value')(x))
    scores = jnp.einsum('bthd,bshd->bhts', q, k) / jnp.sqrt(head)
    causal = jnp.tril(jnp.ones((length, length), bool))
    scores = jnp.where(causal, scores, -1e9)
    out = jnp.einsum('bhts,bshd->bthd', nn.softmax(scores, axis=-1), v)
    return nn.Dense(width, name='out')(jnp.reshape(out, (batch, length, width)))


class Block(nn.Module):
  num_heads: int
  mlp_ratio: int = 4

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    x = x + CausalSelfAttention(self.num_heads)(nn.LayerNorm()(x))
    h = nn.Dense(self.mlp_ratio * x.shape[-1])(nn.LayerNorm()(x))
    return x + nn.Dense(x.shape[-1])(nn.gelu(h))


class TransformerLM(nn.Module):
  """tokens [batch, length] int -> next-token logits [batch, length, vocab]."""

  vocab_size: int
  max_length: int
  width: int = 64
  depth: int = 2
  num_heads: int = 4

  @nn.compact
  def __call__(self, tokens: jnp.ndarray) -> jnp.ndarray:
    positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
    x = (nn.Embed(self.vocab_size, self.width, name='token_embed')(tokens) +
         nn.Embed(self.max_length, self.width, name='position_embed')(
             positions))
    for _ in range(self.depth):
      x = Block(self.num_heads)(x)
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

"""Canary exposure (Carlini et al. 2019, "The Secret Sharer").

A canary is a conversation whose assistant reply holds a random secret (here
`digits` random digits, so |R| = 10^digits possible secrets) planted in the
training data. The model's log-perplexity of the canary conversation with its
true secret is compared with that of the same conversation with other secrets
r ∈ R; the exposure of the secret is

    exposure = log2 |R| − log2 rank(true secret among R),

from log2 |R| (it is the model's most likely secret) down to 0. A secret the
model never saw has a uniformly random rank, whose expected exposure is
1 / ln 2 ≈ 1.44 bits; that is "chance", and control canaries (drawn but never
planted) measure it on the same model.

R is too large to score whole, so two estimates from `num_candidates` random
secrets are reported: the sampled rank (rank among the candidates, scaled to
|R|; it saturates at log2 of the number of candidates), and the paper's
extrapolation: fit a skew-normal distribution to the candidates'
log-perplexities and take exposure = −log2 P(X ≤ the secret's log-perplexity),
capped at log2 |R|.

Only the assistant's tokens are scored (the user's prefix is the same for
every candidate, and the loss of training never touched it); the tokens before
the secret are identical for all candidates, so the ranking depends on the
secret's tokens alone.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from jaxdp.lm import chat
from jaxdp.lm import synthetic_conversations
from jaxdp.lm import task as lm_task

CHANCE = 1.0 / math.log(2.0)  # Expected exposure of a never-seen secret.


def log_perplexities(apply_fn, params, tokenizer, template: str,
                     conversations: list, batch_size: int = 64) -> np.ndarray:
  """−log p of each conversation's assistant tokens under the model, [n]."""
  encoded = [chat.encode(tokenizer, template, m, 1 << 30) for m in
             conversations]
  length = max(len(ids) for ids, _ in encoded)
  tokens = np.zeros((len(encoded), length), np.int32)
  learned = np.zeros((len(encoded), length), bool)
  for i, (ids, mask) in enumerate(encoded):
    tokens[i, :len(ids)], learned[i, :len(ids)] = ids, mask

  @jax.jit
  def score(params, tokens, learned):
    log_likelihood, _ = lm_task.token_losses(apply_fn, params, tokens,
                                             jnp.ones_like(tokens))
    return -jnp.sum(jnp.where(learned[:, 1:], log_likelihood, 0.0), axis=1)

  out = []
  for start in range(0, len(tokens), batch_size):
    rows = np.arange(start, start + batch_size) % len(tokens)  # Fixed shape.
    out.append(np.asarray(score(params, tokens[rows], learned[rows])))
  return np.concatenate(out)[:len(tokens)]


def exposures_of(secret_values, candidate_values: np.ndarray,
                 space_bits: float) -> list:
  """Both exposure estimates of each secret from candidates' log-perplexities.

  The skew-normal is fitted once to the candidates and serves every secret.
  """
  m = len(candidate_values)
  fit = stats.skewnorm.fit(candidate_values)
  out = []
  for value in np.atleast_1d(secret_values):
    below = int(np.sum(candidate_values < value))
    ties = int(np.sum(candidate_values == value))
    # Rank in R estimated from the candidates (1 = most likely secret).
    rank = 1.0 + (below + 0.5 * ties) / m * (2.0 ** space_bits - 1.0)
    log_cdf = stats.skewnorm.logcdf(value, *fit)
    out.append({
        'log_perplexity': float(value),
        'candidates_below': below,
        'sampled_rank_exposure': float(space_bits - math.log2(rank)),
        'extrapolated_exposure': float(min(space_bits,
                                           -log_cdf / math.log(2.0))),
    })
  return out


def canary_exposures(apply_fn, params, tokenizer, template: str,
                     canaries: list, num_candidates: int = 1000,
                     seed: int = 0, batch_size: int = 64) -> list:
  """Exposure of every canary (planted or control) under the model."""
  rng = np.random.default_rng(seed)
  out = []
  for canary in canaries:
    digits = len(canary.secret.split())
    candidates = [synthetic_conversations.format_secret(
        rng.integers(0, 10, digits)) for _ in range(num_candidates)]
    candidates = [c for c in candidates if c != canary.secret]
    messages = [synthetic_conversations.Canary(canary.name, s, 0).messages()
                for s in [canary.secret] + candidates]
    values = log_perplexities(apply_fn, params, tokenizer, template,
                              messages, batch_size)
    result, = exposures_of(values[0], values[1:], digits * math.log2(10.0))
    out.append(dict(canary.to_json(), **result,
                    num_candidates=len(candidates)))
  return out

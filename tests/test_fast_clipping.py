"""The fast clipping path equals the vmap reference, layer by layer."""

from equivalence import assert_fast_matches_vmap
from equivalence import flat as _flat
from flax import traverse_util
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdp import clipping
from jaxdp.clipping import fast as fast_clipping
from jaxdp.models import MLP
from jaxdp.models import TanhCNN
from jaxdp.models import lora
from jaxdp.models.transformer import TransformerLM
from jaxdp.models.transformer import next_token_loss


class DenseOnSequences(nn.Module):
  width: int

  @nn.compact
  def __call__(self, x):  # [n, T, d] -> [n]
    h = jnp.tanh(nn.Dense(self.width)(x))
    return jnp.mean(nn.Dense(3)(h), axis=(1, 2))


class EmbedThenNorms(nn.Module):

  @nn.compact
  def __call__(self, ids):  # [n, T] -> [n]
    x = nn.Embed(11, 6)(ids)
    x = nn.LayerNorm()(x)
    x = nn.RMSNorm()(jnp.tanh(nn.Dense(6)(x)))
    return jnp.sum(jnp.sin(x), axis=(1, 2))


class GroupNormConv(nn.Module):

  @nn.compact
  def __call__(self, x):  # [n, H, W, C] -> [n]
    x = nn.Conv(8, (3, 3))(x)
    x = nn.GroupNorm(num_groups=4)(x)
    return jnp.sum(jnp.tanh(nn.Dense(2)(jnp.reshape(x, (x.shape[0], -1)))),
                   axis=1)


class Convs(nn.Module):
  """Strides, dilation, explicit padding, and a grouped conv (vmap)."""

  @nn.compact
  def __call__(self, x):
    x = jnp.tanh(nn.Conv(4, (3, 2), strides=(2, 1), padding='SAME')(x))
    x = jnp.tanh(nn.Conv(4, (2, 2), kernel_dilation=2, padding='VALID')(x))
    x = jnp.tanh(nn.Conv(6, (3, 3), padding=((1, 2), (0, 1)),
                         use_bias=False)(x))
    x = nn.Conv(6, (1, 1), feature_group_count=2)(x)
    return jnp.sum(x ** 2, axis=(1, 2, 3))


class DenseGenerals(nn.Module):
  """Features as a tuple, several contracted axes, a non-trailing axis."""

  @nn.compact
  def __call__(self, x):  # [n, T=3, d=4] -> [n]
    h = jnp.tanh(nn.DenseGeneral((2, 3), axis=-1)(x))  # [n, 3, 2, 3]
    h = jnp.tanh(nn.DenseGeneral(5, axis=(-2, -1))(h))  # [n, 3, 5]
    h = nn.DenseGeneral(2, axis=1)(h)  # Contracts T: [n, 5, 2].
    return jnp.sum(h ** 2, axis=(1, 2))


class Attention(nn.Module):
  """Flax's own attention: four DenseGeneral projections."""

  @nn.compact
  def __call__(self, x):  # [n, T, d] -> [n]
    y = nn.MultiHeadDotProductAttention(num_heads=2, qkv_features=8)(
        x, x, mask=nn.make_causal_mask(x[..., 0]))
    return jnp.sum(jnp.tanh(y), axis=(1, 2))


class Einsums(nn.Module):
  """Einsum layers that are Dense layers after transposes, and one not."""

  @nn.compact
  def __call__(self, x):  # [n, T=3, d=4] -> [n]
    h = jnp.tanh(nn.Einsum((4, 2, 3), 'btd,dhk->bthk')(x))
    h = jnp.tanh(nn.Einsum((3, 2, 5), 'bthk,khf->btf', use_bias=False)(h))
    h = nn.Einsum((5, 2), 'btf,fp->bpt')(h)  # Output axes reordered.
    # A kernel with a batch-like axis shared by all operands: left to vmap.
    h = nn.Einsum((2, 3, 3), 'bpt,pts->bps')(h)
    return jnp.sum(h ** 2, axis=(1, 2))


class Inner(nn.Module):

  @nn.compact
  def __call__(self, x):
    return jnp.tanh(nn.Dense(5)(x))


class Rematerialised(nn.Module):
  """A layer inside nn.remat: its parameters fall back to vmap."""

  @nn.compact
  def __call__(self, x):
    return jnp.sum(nn.Dense(2)(nn.remat(Inner)()(x)) ** 2, -1)


class SharedDense(nn.Module):

  @nn.compact
  def __call__(self, x):
    dense = nn.Dense(x.shape[-1])
    return jnp.sum(jnp.tanh(dense(jnp.tanh(dense(x)))), axis=-1)


class TiedEmbedding(nn.Module):

  @nn.compact
  def __call__(self, ids):
    embed = nn.Embed(9, 5)
    logits = embed.attend(jnp.tanh(embed(ids)))
    return jnp.mean(nn.logsumexp(logits, axis=-1), axis=-1)


def _scalar_model_loss(model):
  return lambda params, x: model.apply({'params': params}, x)


def _case(name):
  key = jax.random.key(0)
  kx, kp = jax.random.split(key)
  if name == 'mlp':
    model = MLP((16,), 4)
    x = jax.random.normal(kx, (6, 10))
    y = jax.random.randint(kx, (6,), 0, 4)
    params = model.init(kp, x)['params']
    def loss(p, batch):
      logits = model.apply({'params': p}, batch[0])
      return -jnp.take_along_axis(jax.nn.log_softmax(logits),
                                  batch[1][:, None], 1)[:, 0]
    return loss, params, (x, y), {('Dense_0',), ('Dense_1',)}
  if name in ('dense_gram', 'dense_materialised'):
    # Gram when 2T² < d·p: T=3, d=p=8. Materialised: T=12, d=4, p=2.
    t, d, width = (3, 8, 8) if name == 'dense_gram' else (12, 4, 2)
    model = DenseOnSequences(width)
    x = jax.random.normal(kx, (5, t, d))
    sites = {('Dense_0',), ('Dense_1',)}
  elif name == 'embed_norms':
    model = EmbedThenNorms()
    x = jax.random.randint(kx, (5, 7), 0, 4)  # Few ids: many repeats.
    sites = {('Embed_0',), ('LayerNorm_0',), ('RMSNorm_0',), ('Dense_0',)}
  elif name == 'groupnorm_conv':
    model = GroupNormConv()
    x = jax.random.normal(kx, (4, 5, 5, 2))
    sites = {('Conv_0',), ('GroupNorm_0',), ('Dense_0',)}
  elif name in ('dense_general', 'einsum'):
    model = DenseGenerals() if name == 'dense_general' else Einsums()
    x = jax.random.normal(kx, (4, 3, 4))
    sites = ({('DenseGeneral_0',), ('DenseGeneral_1',), ('DenseGeneral_2',)}
             if name == 'dense_general' else
             {('Einsum_0',), ('Einsum_1',), ('Einsum_2',)})
  elif name == 'attention':
    model = Attention()
    x = jax.random.normal(kx, (3, 5, 6))
    sites = {('MultiHeadDotProductAttention_0', k)
             for k in ('query', 'key', 'value', 'out')}
  elif name == 'shared_dense':
    model = SharedDense()
    x = jax.random.normal(kx, (4, 3))
    sites = set()  # Called twice: left to vmap.
  elif name == 'remat':
    model = Rematerialised()
    x = jax.random.normal(kx, (4, 5))
    sites = {('Dense_0',)}  # The Dense inside nn.remat is left to vmap.
  elif name == 'tied_embedding':
    model = TiedEmbedding()
    x = jax.random.randint(kx, (4, 6), 0, 9)
    sites = set()  # Also used through attend: left to vmap.
  elif name == 'tanh_cnn':
    model = TanhCNN(10)
    x = jax.random.normal(kx, (3, 28, 28, 1))
    params = model.init(kp, x)['params']
    loss = lambda p, xs: jnp.sum(model.apply({'params': p}, xs) ** 2, -1)
    return loss, params, x, None
  elif name == 'convs':
    model = Convs()
    x = jax.random.normal(kx, (3, 9, 8, 2))
    sites = {('Conv_0',), ('Conv_1',), ('Conv_2',)}  # Conv_3 is grouped.
  elif name in ('transformer', 'lora'):
    model = TransformerLM(vocab_size=13, max_length=9, width=16, depth=1,
                          num_heads=2, lora_rank=2 if name == 'lora' else 0)
    x = jax.random.randint(kx, (4, 9), 0, 13)
    params = model.init(kp, x[:, :-1])['params']
    loss = next_token_loss(model.apply)
    if name == 'lora':
      frozen, params = lora.split_adapters(params)
      # B starts at 0; perturb it so both adapter gradients are non-trivial.
      params = jax.tree_util.tree_map(
          lambda p: p + 0.1 * jax.random.normal(kp, p.shape), params)
      loss = lora.with_frozen(loss, frozen)
    return loss, params, x, None
  params = model.init(kp, x)['params']
  return _scalar_model_loss(model), params, x, sites


CASES = ['mlp', 'dense_gram', 'dense_materialised', 'dense_general',
         'einsum', 'attention', 'embed_norms',
         'groupnorm_conv', 'convs', 'remat', 'shared_dense', 'tied_embedding', 'tanh_cnn',
         'transformer', 'lora']


# The second backward pass shares the norms with book-keeping; it is checked
# on a case of every kind of site (and the vmap fallback) to keep the suite
# short.
SECOND_BACKWARD_CASES = ['mlp', 'attention', 'embed_norms', 'groupnorm_conv',
                         'convs', 'remat', 'lora']


@pytest.mark.parametrize('name, clipped_sum',
                         [(name, 'bookkeeping') for name in CASES] +
                         [(name, 'second_backward')
                          for name in SECOND_BACKWARD_CASES])
def test_fast_path_matches_vmap_reference(name, clipped_sum):
  loss, params, batch, expected_sites = _case(name)
  sites = assert_fast_matches_vmap(loss, params, batch, clipped_sum)
  if expected_sites is not None:
    assert {s.path for s in sites} == expected_sites
  else:  # Every parameter is on the fast path.
    covered = {s.path + (k,) for s in sites for k in s.param_names}
    assert covered == set(traverse_util.flatten_dict(params))


@pytest.mark.parametrize('clipped_sum', fast_clipping.CLIPPED_SUMS)
def test_fast_path_drops_a_nonfinite_example_like_the_reference(clipped_sum):
  loss, params, (x, y), _ = _case('mlp')
  x = x.at[2].set(jnp.nan)
  mask = jnp.ones(6, bool)
  ref_sum, ref_stats = clipping.vmap_clipped_chunk(loss, 1.0)(params, (x, y),
                                                              mask)
  fast_sum, fast_stats = fast_clipping.fast_clipped_chunk(
      loss, 1.0, clipped_sum)(params, (x, y), mask)
  assert fast_stats.dropped.tolist() == ref_stats.dropped.tolist()
  assert bool(fast_stats.dropped[2])
  assert np.all(np.isfinite(_flat(fast_sum)))
  np.testing.assert_allclose(_flat(fast_sum), _flat(ref_sum), rtol=1e-5,
                             atol=1e-6)

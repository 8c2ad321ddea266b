"""Every registered noise link × clip rule × clipping method keeps the
invariants the accountant relies on. A new entry in `noise.LINKS`,
`clipping.RULES` or `clipping.METHODS` is tested here without a new line."""

import itertools
import math
import types

import dp_accounting
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import base
from jaxdp import accounting
from jaxdp import clipping
from jaxdp import noise
from jaxdp import sharding
from jaxdp.errors import ConfigError
from jaxdp.mechanism import build_mechanism
from jaxdp.mechanism import hand_built_dp
from jaxdp.train import run_identity
from jaxdp.train import step as steps
from jaxdp.train.state import TrainState

LINKS = sorted(noise.LINKS)
RULES = sorted(clipping.RULES)
METHODS = sorted(clipping.METHODS)
_N, _B, _STEPS = 400, 32, 12


class _Net(nn.Module):
  """Two Dense layers (fast-clipping sites) and a bare parameter (vmap)."""

  @nn.compact
  def __call__(self, x):
    shift = self.param('shift', nn.initializers.normal(1.0), (x.shape[-1],))
    h = jnp.tanh(nn.Dense(8)(x + shift))
    return nn.Dense(3)(h)


def _loss(params, batch):
  x, y = batch
  logits = _Net().apply({'params': params}, x)
  return optax.softmax_cross_entropy_with_integer_labels(logits, y)


def _params():
  return _Net().init(jax.random.key(0), jnp.zeros((1, 5)))['params']


def _batch(size=16, scale=30.0, seed=1):
  rng = np.random.default_rng(seed)
  x = (scale * rng.normal(size=(size, 5))).astype(np.float32)
  return (x, rng.integers(0, 3, size).astype(np.int32)), np.ones(size, bool)


def _dp(link: str, rule: str, **overrides):
  dp = base.get_config().dp
  dp.batch_size, dp.clip_norm, dp.accountant = _B, 1.0, 'rdp'
  dp.noise_multiplier, dp.target_epsilon = 1.5, None
  dp.noise_mechanism, dp.clip_rule = link, rule
  if link == 'adaptive':
    dp.adaptive_clip_quantile = 0.5
  for key, value in overrides.items():
    dp[key] = value
  return dp


def _perf(method: str, microbatch=None):
  perf = base.get_config().perf
  perf.clipping, perf.microbatch_size = method, microbatch
  return perf


def _mechanism(link, rule, method='vmap', microbatch=None, **overrides):
  return build_mechanism(_dp(link, rule, **overrides),
                         _perf(method, microbatch), _N, _STEPS, None, 0)


@pytest.mark.parametrize('link,rule,method',
                         list(itertools.product(LINKS, RULES, METHODS)))
def test_step_jits_once_and_each_contribution_is_bounded(link, rule, method):
  mechanism = _mechanism(link, rule, method, microbatch=8)
  tx = optax.chain(mechanism.noise_transform(0), optax.sgd(0.1))
  params = _params()
  placement = sharding.Placement(sharding.make_mesh(1))
  state = placement.put_state(TrainState(
      step=jnp.zeros([], jnp.int32), params=params, opt_state=tx.init(params)))
  step = steps.make_train_step(_loss, mechanism, tx, placement, state)
  for seed in (1, 2):
    inputs, mask = _batch(seed=seed)
    state, metrics = step(state, {'inputs': inputs, 'mask': mask})
  assert step._cache_size() == 1  # pylint: disable=protected-access
  assert int(state.step) == 2 and noise.noise_steps(state.opt_state) == [2]
  assert float(metrics['clipped_fraction']) > 0.5  # The bound is at work.

  clipped = mechanism.clipped_grad_sum(_loss)
  assert isinstance(clipped, clipping.ClippedSum)
  inputs, mask = _batch(size=8)
  for i in range(8):
    alone = np.arange(8) == i
    total, stats = jax.jit(clipped)(_params(), inputs, alone)
    norm = math.sqrt(sum(float(np.sum(np.asarray(g, np.float64) ** 2))
                         for g in jax.tree_util.tree_leaves(total)))
    assert norm <= clipped.l2_bound * (1 + 1e-5)
    assert not bool(stats.clipped[~alone].any())  # Padding is never counted.


@pytest.mark.parametrize('rule,method',
                         list(itertools.product(RULES, METHODS)))
def test_no_clipping_and_no_noise_is_the_non_private_mean(rule, method):
  mechanism = _mechanism('gaussian', rule, method, noise_multiplier=0.0,
                         clip_norm=math.inf)
  tx = mechanism.noise_transform(0)
  inputs, mask = _batch()
  total, _ = mechanism.clipped_grad_sum(_loss)(_params(), inputs, mask)
  mean, _ = tx.update(total, tx.init(total))
  expected = jax.grad(lambda p: jnp.sum(_loss(p, inputs)) / _B)(_params())
  for a, b in zip(jax.tree_util.tree_leaves(mean),
                  jax.tree_util.tree_leaves(expected)):
    np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize('link', [name for name in LINKS
                                  if name != 'gaussian'])
def test_links_that_need_a_private_run_refuse_a_baseline(link):
  with pytest.raises(ConfigError):
    _mechanism(link, 'global', noise_multiplier=0.0, clip_norm=math.inf)


@pytest.mark.parametrize('link,rule', list(itertools.product(LINKS, RULES)))
def test_noise_drawn_and_the_dp_event_agree_with_the_link(link, rule):
  mechanism = _mechanism(link, rule)
  releases = mechanism.link.releases(mechanism)
  what, std, sens = releases[0]
  # A correlated link releases C·(clipped sums): its strategy's sensitivity
  # (a column's norm, or a participation pattern's) times the sum's.
  factor = getattr(mechanism.link, 'column_sensitivity', lambda m: 1.0)(
      mechanism)
  assert what == 'clipped_sum' and sens == factor * mechanism.clipped_grad_sum(
      _loss).sensitivity(mechanism.neighboring_relation)
  zeros = {'w': jnp.zeros((200, 200), jnp.float32)}
  tx = mechanism.noise_transform(3)
  extra = mechanism.link.step_inputs(
      jnp.ones(4, bool), clipping.ClippingStats(*(jnp.zeros(4, bool),) * 4))
  drawn, _ = tx.update(zeros, tx.init(zeros), **extra)
  empirical = float(jnp.std(drawn['w'])) * mechanism.expected_batch_size
  assert empirical == pytest.approx(std, rel=0.02)  # 40,000 draws: ±0.4%.
  assert empirical >= std * 0.98
  # The releases together are the step's DpEvent (one participation's,
  # for a cyclic schedule; BLT's planned run is one unsampled Gaussian).
  event = accounting.per_participation(mechanism.pieces()[0][1])
  combined = sum((s / d) ** 2 for _, d, s in releases) ** -0.5
  if link == 'blt':
    assert isinstance(event, dp_accounting.GaussianDpEvent)
    assert event.noise_multiplier == pytest.approx(combined, rel=1e-9)
    return
  assert isinstance(event, dp_accounting.PoissonSampledDpEvent)
  assert event.event.noise_multiplier == pytest.approx(combined, rel=1e-9)
  groups = getattr(mechanism.sampler, 'groups', 1)  # Cyclic: q' = B·b/N.
  assert event.sampling_probability == pytest.approx(groups * _B / _N)


@pytest.mark.parametrize('link,rule', list(itertools.product(LINKS, RULES)))
def test_perf_leaves_epsilon_unchanged(link, rule):
  reference = _mechanism(link, rule, 'vmap')
  for method, microbatch in itertools.product(METHODS, (None, 8)):
    other = _mechanism(link, rule, method, microbatch)
    assert other.step_event() == reference.step_event()
    assert other.epsilon() == reference.epsilon()
    assert other.privacy_settings() == reference.privacy_settings()
  # And the rule never changes ε: every rule's bound is C.
  assert reference.epsilon() == _mechanism(link, 'global').epsilon()


@pytest.mark.parametrize('link', LINKS)
def test_rollback_never_replays_noise(link):
  mechanism = _mechanism(link, 'global')
  zeros = {'w': jnp.zeros((50,), jnp.float32)}
  tx = mechanism.noise_transform(0)
  extra = mechanism.link.step_inputs(
      jnp.ones(4, bool), clipping.ClippingStats(*(jnp.zeros(4, bool),) * 4))
  state, saved, drawn = tx.init(zeros), None, []
  for i in range(4):
    if i == 1:
      saved = state  # The checkpoint a rollback returns to.
    out, state = tx.update(zeros, state, **extra)
    drawn.append(np.asarray(out['w']))
  restored = noise.with_noise_step(saved, 4)  # What a rollback does.
  assert noise.noise_steps(restored) == [4]
  after, _ = tx.update(zeros, restored, **extra)
  for earlier in drawn:
    assert not np.allclose(np.asarray(after['w']), earlier)


@pytest.mark.parametrize('link,rule', list(itertools.product(LINKS, RULES)))
def test_a_resume_that_changes_a_link_or_rule_setting_is_refused(link, rule):
  mechanism = _mechanism(link, rule)
  current = mechanism.privacy_settings()
  fields = {**mechanism.link.FIELDS, **mechanism.clip_rule.FIELDS}
  assert set(current) == set(fields)
  run_identity.check_resume(dict(current), current)  # Unchanged: allowed.
  for key in current:
    changed = dict(current, **{key: 'something else'})
    with pytest.raises(ConfigError) as error:
      run_identity.check_resume(changed, current)
    assert error.value.field == fields[key]
  # Another link or rule altogether is refused too.
  for other_link, other_rule in itertools.product(LINKS, RULES):
    if (other_link, other_rule) != (link, rule):
      with pytest.raises(ConfigError):
        run_identity.check_resume(
            current, _mechanism(other_link, other_rule).privacy_settings())


def test_every_privacy_setting_has_a_config_field():
  config = base.get_config()
  dataset = types.SimpleNamespace(num_train=_N, name='stand_in',
                                  fingerprint=lambda: 'f' * 64)
  fields = run_identity.fields()
  for link, rule in itertools.product(LINKS, RULES):
    mechanism = _mechanism(link, rule)
    settings = run_identity.privacy_settings(mechanism, dataset, config)
    assert set(settings) <= set(fields), set(settings) - set(fields)
  with pytest.raises(ValueError, match='no config field'):
    run_identity.check_resume({}, {'a_new_setting': 1})


def test_hand_built_dp_has_the_base_config_defaults():
  dp = base.get_config().dp
  built = hand_built_dp(batch_size=1)
  for key in built:
    if key != 'batch_size':
      assert built[key] == dp[key], key
  contract_fields = {field.split('.', 1)[1]
                     for contract in (*noise.LINKS.values(),
                                      *clipping.RULES.values())
                     for field in contract.FIELDS.values()
                     if field.startswith('dp.')}
  assert contract_fields <= set(built)

"""Samplers: Poisson sizes are Binomial(N, q), padding never drops examples."""

import numpy as np
import pytest
from scipy import stats

from jaxdp import sampling
from jaxdp import streams
from jaxdp.errors import ConfigError


def test_poisson_batch_sizes_follow_binomial():
  n, batch = 2000, 50.0
  sampler = sampling.PoissonSampler(n, batch, seed=3)
  sizes = np.array([sampler.sample(step).size for step in range(3000)])
  q = batch / n
  # Chi-square goodness of fit on bins with expected count >= 5.
  edges = np.arange(int(stats.binom.ppf(1e-4, n, q)),
                    int(stats.binom.isf(1e-4, n, q)) + 2)
  observed = np.array([np.sum(sizes < edges[0])] +
                      [np.sum(sizes == k) for k in edges[:-1]] +
                      [np.sum(sizes >= edges[-1])])
  probs = np.array([stats.binom.cdf(edges[0] - 1, n, q)] +
                   [stats.binom.pmf(k, n, q) for k in edges[:-1]] +
                   [stats.binom.sf(edges[-1] - 1, n, q)])
  expected = probs * len(sizes)
  keep = expected >= 5
  obs = np.append(observed[keep], observed[~keep].sum())
  exp = np.append(expected[keep], expected[~keep].sum())
  _, p_value = stats.chisquare(obs, exp * obs.sum() / exp.sum())
  assert p_value > 1e-3
  # And the obvious wrong models are rejected by the same data.
  assert abs(sizes.mean() - batch) < 5 * np.sqrt(batch * (1 - q) / len(sizes))
  assert sizes.var() > 0.8 * batch * (1 - q)  # Not a fixed-size sampler.


def test_poisson_includes_each_example_with_probability_q():
  n, batch, steps = 200, 20.0, 4000
  sampler = sampling.PoissonSampler(n, batch, seed=0)
  counts = np.zeros(n)
  for step in range(steps):
    b = sampler.sample(step)
    counts[b.indices[b.mask]] += 1
  q = batch / n
  _, p_value = stats.chisquare(counts, np.full(n, counts.sum() / n))
  assert p_value > 1e-3
  assert abs(counts.mean() / steps - q) < 0.005


def test_padding_is_static_and_overflow_is_never_truncated():
  # A cap at the median forces frequent overflows.
  sampler = sampling.PoissonSampler(1000, 100.0, seed=1, multiple_of=8,
                                    overflow_probability=0.5)
  assert sampler.padded_size % 8 == 0
  overflowed = 0
  for step in range(300):
    batch = sampler.sample(step)
    rng = np.random.default_rng([1, streams.SAMPLER_STREAM, step])
    truth = np.flatnonzero(rng.random(1000) < 0.1)
    np.testing.assert_array_equal(batch.indices[batch.mask], truth)
    assert len(batch.mask) % sampler.padded_size == 0
    overflowed += len(batch.mask) > sampler.padded_size
  assert overflowed > 50


def test_default_cap_overflows_rarely():
  n, batch = 60_000, 256.0
  sampler = sampling.PoissonSampler(n, batch, seed=0)
  q = batch / n
  assert stats.binom.sf(sampler.padded_size, n, q) <= 1e-3
  assert sampler.padded_size < batch + 5 * np.sqrt(batch)


def test_samples_depend_only_on_seed_and_step():
  a = sampling.PoissonSampler(500, 25.0, seed=4)
  b = sampling.PoissonSampler(500, 25.0, seed=4)
  np.testing.assert_array_equal(a.sample(17).indices, b.sample(17).indices)
  assert not np.array_equal(a.sample(17).indices, a.sample(18).indices)
  c = sampling.PoissonSampler(500, 25.0, seed=5)
  assert not np.array_equal(a.sample(17).indices, c.sample(17).indices)


def test_fixed_size_draws_distinct_uniform_subsets():
  sampler = sampling.FixedSizeSampler(100, 10, seed=0)
  counts = np.zeros(100)
  for step in range(2000):
    batch = sampler.sample(step)
    chosen = batch.indices[batch.mask]
    assert batch.size == 10 and len(np.unique(chosen)) == 10
    counts[chosen] += 1
  _, p_value = stats.chisquare(counts)
  assert p_value > 1e-3


@pytest.mark.parametrize('name', ['shuffle', 'epoch_shuffle'])
def test_epoch_shuffling_is_refused_with_a_reason(name):
  with pytest.raises(ConfigError, match='dp.sampler.*no matching event'):
    sampling.make_sampler(name, 100, 10, seed=0)


@pytest.mark.parametrize('probability', [0.0, -0.1, 0.9])
def test_overflow_probability_is_validated(probability):
  with pytest.raises(ConfigError, match='perf.batch_overflow_probability'):
    sampling.make_sampler('poisson', 100, 10, seed=0,
                          overflow_probability=probability)


def test_negative_seed_is_refused():
  with pytest.raises(ConfigError, match='seed'):
    sampling.make_sampler('poisson', 100, 10, seed=-1)


def test_batch_size_outside_dataset_is_refused():
  with pytest.raises(ConfigError, match='dp.batch_size'):
    sampling.make_sampler('poisson', 100, 101, seed=0)
  with pytest.raises(ConfigError, match='dp.batch_size'):
    sampling.make_sampler('poisson', 100, 0, seed=0)

"""The benchmark runs every model and method and reports what it promises."""

import jax
import pytest

from jaxdp.studies import benchmark
from jaxdp.models import lora


def test_benchmark_reports_the_dp_step_against_the_nonprivate_one():
  # The fast variant of the next test (which compiles all six methods).
  results = benchmark.run(['mlp'], ['nonprivate', 'fast'], batch_size=4,
                          timed_steps=1, log=lambda line: None)
  assert set(results['mlp']) == {'nonprivate', 'fast'}
  assert results['mlp']['nonprivate']['ratio_to_nonprivate'] == 1.0
  assert results['mlp']['fast']['median_ms'] > 0
  assert '| fast |' in benchmark.table(results)


@pytest.mark.slow  # About 20 s: every method's step is compiled.
def test_benchmark_reports_every_method():
  results = benchmark.run(['mlp'], benchmark.METHODS, batch_size=4,
                          timed_steps=1, microbatch_size=2,
                          log=lambda line: None)
  by_method = results['mlp']
  assert set(by_method) == set(benchmark.METHODS)
  assert by_method['nonprivate']['ratio_to_nonprivate'] == 1.0
  for stats in by_method.values():
    assert stats['median_ms'] > 0 and stats['peak_memory_mb'] > 0
  assert '| fast |' in benchmark.table(results)


@pytest.mark.parametrize('model', [
    *sorted(set(benchmark.MODELS) - {'mlp', 'smollm2_lora'}),
    # Loads and compiles the 135M model: about a minute here.
    pytest.param('smollm2_lora', marks=pytest.mark.slow)])
def test_every_benchmark_problem_gives_finite_per_example_losses(model):
  # `run` times every model's step exactly as the MLP's above; compiling
  # those steps takes seconds to half a minute each, and the fast path of
  # every one of these models is checked against vmap in
  # test_fast_clipping.py, so only the problems are checked here.
  problem = benchmark.make_problem(model, 2, wrn_width=1)
  if model == 'wrn16_4':
    assert 'WRN-16-1' in problem.description
  losses = jax.jit(problem.batch_loss)(
      lora.merge(problem.frozen, problem.params), problem.inputs)
  assert losses.shape == (2,) and bool(jax.numpy.all(jax.numpy.isfinite(losses)))


# Runs only where the optional [compare] extras (jax_privacy, Opacus, torch)
# are installed, which the README's test command does not install; there it
# takes about 20 s, so it is left to `-m slow`.
@pytest.mark.slow
def test_comparison_rows_appear_where_the_libraries_are_installed():
  from jaxdp.studies import benchmark_compare
  found = benchmark_compare.available()
  if not any(found.values()):
    pytest.skip('pip install -e .[compare] to time jax_privacy and Opacus')
  lines = []
  results = benchmark.run(['cnn'], ['nonprivate'], batch_size=4,
                          timed_steps=1, compare=True, log=lines.append)
  expected = {m for m, ok in found.items() if ok} | {'nonprivate'}
  assert set(results['cnn']) == expected
  for method in expected - {'nonprivate'}:
    assert results['cnn'][method]['median_ms'] > 0


def test_the_accounting_benchmark_agrees_with_dp_accounting():
  from jaxdp.studies import accounting_benchmark
  r = accounting_benchmark.run(num_steps=100, reference_steps=20)
  assert r['epsilon_reference_vectorised'] == pytest.approx(
      r['epsilon_reference_dp_accounting_same_orders'], rel=1e-9)
  # Integer orders only: never below dp-accounting's default orders here.
  assert (r['epsilon_reference_vectorised']
          >= r['epsilon_reference_dp_accounting_default_orders'] * (1 - 1e-9))
  assert 'dp-accounting' in accounting_benchmark.table(r)

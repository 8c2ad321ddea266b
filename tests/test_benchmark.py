"""The benchmark runs every model and method and reports what it promises."""

import jax
import pytest

from jaxdp import benchmark


@pytest.mark.parametrize('model, methods', [
    ('mlp', benchmark.METHODS),
    ('cnn', ('nonprivate', 'fast')),
    ('lora', ('nonprivate', 'fast')),
])
def test_benchmark_reports_every_method(model, methods):
  results = benchmark.run([model], methods, batch_size=4, timed_steps=1,
                          microbatch_size=2, log=lambda line: None,
                          wrn_width=1)
  by_method = results[model]
  assert set(by_method) == set(methods)
  assert by_method['nonprivate']['ratio_to_nonprivate'] == 1.0
  for stats in by_method.values():
    assert stats['median_ms'] > 0 and stats['peak_memory_mb'] > 0
  assert '| fast |' in benchmark.table(results)


def test_wrn_problem_has_the_named_width_and_per_example_losses():
  # The full step is timed by `run` like the CNN's; compiling it for the WRN
  # takes half a minute, so only the problem is checked here.
  problem = benchmark.make_problem('wrn16_4', 2, wrn_width=1)
  assert 'WRN-16-1' in problem.description
  losses = problem.batch_loss(problem.params, problem.inputs)
  assert losses.shape == (2,) and bool(jax.numpy.all(jax.numpy.isfinite(losses)))


def test_comparison_rows_appear_where_the_libraries_are_installed():
  from jaxdp import benchmark_compare
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

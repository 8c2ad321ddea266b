"""The benchmark runs every model and method and reports what it promises."""

import pytest

from jaxdp import benchmark


@pytest.mark.parametrize('model, methods', [
    ('mlp', benchmark.METHODS),
    ('cnn', ('nonprivate', 'fast')),
    ('transformer', ('nonprivate', 'fast')),
    ('lora', ('nonprivate', 'fast')),
])
def test_benchmark_reports_every_method(model, methods):
  results = benchmark.run([model], methods, batch_size=4, timed_steps=1,
                          microbatch_size=2, log=lambda line: None)
  by_method = results[model]
  assert set(by_method) == set(methods)
  assert by_method['nonprivate']['ratio_to_nonprivate'] == 1.0
  for stats in by_method.values():
    assert stats['median_ms'] > 0 and stats['peak_memory_mb'] > 0
  assert '| fast |' in benchmark.table(results)

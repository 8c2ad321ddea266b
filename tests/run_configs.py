"""Short training configs shared by the tests of whole runs."""

from configs import base
from jaxdp.train import ledger


def set_field(config, field: str, value) -> None:
  """config.<field> = value for a dotted field such as 'dp.clip_norm'."""
  section, _, name = field.rpartition('.')
  setattr(getattr(config, section) if section else config, name, value)


def fixed_sigma_config(num_steps: int, **overrides):
  """The base config on digits with σ = 1 fixed and RDP accounting.

  A fixed σ skips calibration and RDP answers in microseconds, which keeps
  whole-run tests short. `overrides` map 'section__field' to values.
  """
  config = base.get_config()
  config.train.num_steps = num_steps
  config.eval.every_steps = 0
  config.dp.noise_multiplier = 1.0
  config.dp.target_epsilon = None
  config.dp.accountant = 'rdp'
  for key, value in overrides.items():
    set_field(config, key.replace('__', '.'), value)
  return config


def data_parallel_run_config(num_steps: int, **overrides):
  """A short run whose batches split evenly over 1, 2, 4 or 8 devices.

  Fixed-size batches of 64: every step has the same shape, so a second
  compilation of the step can only come from a change of layout.
  """
  config = fixed_sigma_config(num_steps, dp__sampler='fixed_size',
                              dp__batch_size=64)
  for key, value in overrides.items():
    set_field(config, key.replace('__', '.'), value)
  return config


def rehash_ledger(entries):
  """Recomputes a ledger's whole chain, as a forger who knows the format
  would; returns its lines."""
  prev, out = ledger.GENESIS, []
  for index, entry in enumerate(entries):
    body = {'index': index, 'kind': entry['kind'], 'data': entry['data'],
            'prev': prev}
    prev = ledger.entry_hash(prev, body)
    out.append(ledger.canonical_json(dict(body, hash=prev)))
  return out

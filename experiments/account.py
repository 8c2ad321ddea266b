"""Privacy calculator: ε for a DP-SGD run, or the σ that meets a target ε.

  python -m experiments.account --num_examples=60000 --batch_size=256 \
      --noise_multiplier=1.1 --epochs=60 --delta=1e-5 --accountant=rdp_classic

  python -m experiments.account --num_examples=60000 --batch_size=256 \
      --target_epsilon=3 --epochs=60 --delta=1e-5

  python -m experiments.account --num_examples=60000 --batch_size=256 \
      --target_epsilon=3 --epochs=20 --noise_mechanism=banded_mf --mf_bands=16

For the correlated-noise mechanisms (banded_mf, blt) it also prints the
strategy's RMSE on the running sums of the noise, beside DP-SGD's.

It builds the same mechanism the trainer builds, so its numbers are the
trainer's. The last output line is one JSON object.
"""

import json
import sys

from absl import app
from absl import flags
import ml_collections

from configs import base
from jaxdp import accounting
from jaxdp import sampling
from jaxdp.errors import ConfigError
from jaxdp.mechanism import build_mechanism
from jaxdp.mechanism import hand_built_dp

_N = flags.DEFINE_integer('num_examples', None, 'N, training set size.')
_B = flags.DEFINE_float('batch_size', None,
                        'Expected batch size B (q = B / N).')
_SIGMA = flags.DEFINE_float('noise_multiplier', None,
                            'σ: noise std on the clipped sum is σ·C.')
_TARGET = flags.DEFINE_float('target_epsilon', None,
                             'Calibrate σ to this ε instead of giving σ.')
_EPOCHS = flags.DEFINE_float('epochs', None,
                             'Expected passes; steps = ceil(epochs / q).')
_STEPS = flags.DEFINE_integer('steps', None, 'Number of steps.')
_DELTA = flags.DEFINE_float('delta', 1e-5, 'δ of the guarantee.')
_ACCOUNTANT = flags.DEFINE_enum('accountant', 'pld',
                                list(accounting.ACCOUNTANTS), 'Accountant.')
_SAMPLER = flags.DEFINE_enum('sampler', 'poisson', list(sampling.SAMPLERS),
                             'Batch sampler the accountant assumes.')
_MECHANISM = flags.DEFINE_enum(
    'noise_mechanism', 'gaussian', ['gaussian', 'banded_mf', 'blt'],
    'Noise: independent (DP-SGD) or correlated across steps (DP-MF).')
_BANDS = flags.DEFINE_integer(
    'mf_bands', 4, 'banded_mf/blt: cyclic groups b (participations ≥ b '
    'steps apart; banded_mf: b bands).')
_BUFFERS = flags.DEFINE_integer('mf_buffers', 4, 'blt: buffers.')
_ALLOW_LARGE_DELTA = flags.DEFINE_bool('allow_large_delta', False,
                                       'Accept δ >= 1/N.')


def _dp_config(**fields) -> ml_collections.ConfigDict:
  return hand_built_dp(**{
      'sampler': _SAMPLER.value, 'batch_size': _B.value, 'clip_norm': 1.0,
      'noise_multiplier': _SIGMA.value, 'target_epsilon': _TARGET.value,
      'delta': _DELTA.value, 'accountant': _ACCOUNTANT.value,
      'allow_large_delta': _ALLOW_LARGE_DELTA.value,
      'noise_mechanism': _MECHANISM.value, 'mf_bands': _BANDS.value,
      'mf_buffers': _BUFFERS.value, **fields})


def main(argv):
  del argv
  problems = []
  if _N.value is None or _B.value is None:
    problems.append('--num_examples and --batch_size are required')
  if (_SIGMA.value is None) == (_TARGET.value is None):
    problems.append('give exactly one of --noise_multiplier and '
                    '--target_epsilon')
  if (_EPOCHS.value is None) == (_STEPS.value is None):
    problems.append('give exactly one of --epochs and --steps')
  if problems:
    print('error: ' + '; '.join(problems), file=sys.stderr)
    sys.exit(2)
  perf = base.get_config().perf  # Performance knobs never change ε.
  try:
    mechanism = build_mechanism(_dp_config(), perf, _N.value, _STEPS.value,
                                _EPOCHS.value, seed=0)
  except ConfigError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  summary = mechanism.summary()
  for key in ('clip_norm', 'num_examples'):
    summary.pop(key)
  eps = summary['epsilon']
  if eps is None:
    print(f'ε = inf: σ = {mechanism.noise_multiplier:g} is not private')
  elif _TARGET.value is None:
    print(f'ε = {eps:.4f} at δ = {_DELTA.value:g} after {mechanism.num_steps} '
          f'steps (q = {mechanism.sampling_probability:.5g}, '
          f'σ = {mechanism.noise_multiplier:g}, {_ACCOUNTANT.value})')
  else:
    print(f'σ = {mechanism.noise_multiplier:.4f} reaches ε = {eps:.4f} ≤ '
          f'{_TARGET.value:g} at δ = {_DELTA.value:g} after '
          f'{mechanism.num_steps} steps (q = '
          f'{mechanism.sampling_probability:.5g}, {_ACCOUNTANT.value})')
  strategy = summary.get('correlated_noise')
  if strategy is not None:
    sigma = mechanism.noise_multiplier
    print(f'{strategy["kind"]}: {strategy["bands"]} groups, '
          f'{strategy["buffers"]} noise buffers; RMSE of the noise on the '
          f'running sums = {sigma * strategy["rmse"]:.4g}·C (σ × '
          f'{strategy["rmse"]:.4g}; independent noise at this σ: '
          f'{sigma * strategy["identity_rmse"]:.4g}·C), sensitivity '
          f'{strategy["sensitivity"]:.4g}, max column norm '
          f'{strategy["max_column_norm"]:.4g}')
    if _TARGET.value is not None:
      sgd = build_mechanism(_dp_config(noise_mechanism='gaussian'), perf,
                            _N.value, _STEPS.value, _EPOCHS.value, seed=0)
      summary['dp_sgd_same_epsilon'] = {
          'noise_multiplier': sgd.noise_multiplier,
          'rmse': sgd.noise_multiplier * strategy['identity_rmse']}
      print(f'DP-SGD at the same ε: σ = {sgd.noise_multiplier:.4f}, RMSE '
            f'of the running sums = '
            f'{summary["dp_sgd_same_epsilon"]["rmse"]:.4g}·C')
  print(json.dumps(summary))


if __name__ == '__main__':
  app.run(main)

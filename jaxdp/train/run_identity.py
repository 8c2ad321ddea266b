"""What identifies a run: its privacy settings, data, code and config.

Written into the ledger's `run_start` entry and into every checkpoint. A resume
is allowed only if the privacy settings it would run with are the ones the
checkpoint was written under (`check_resume`): resuming with another σ, C, q,
δ, sampler, accountant, target, seed or dataset would silently change what the
accountant of the run means. The noise link and the clip rule declare their
own settings and fields (`settings()`, `fields()`), so a new mechanism's
settings are checked without an edit here; a setting with no field is
refused outright (`fields`).
"""

import hashlib
import json
import math
import pathlib

from jaxdp import __version__
from jaxdp import clipping
from jaxdp import noise
from jaxdp import private_releases
from jaxdp.errors import ConfigError
from jaxdp.noise.schedules import NoiseSchedule

# privacy_settings key -> the config field a user changes to change it (the
# link's and the rule's come from them).
_FIELDS = {
    'noise_multiplier': 'dp.noise_multiplier',
    'clip_norm': 'dp.clip_norm',
    'expected_batch_size': 'dp.batch_size',
    'delta': 'dp.delta',
    'sampler': 'dp.sampler',
    'neighboring_relation': 'dp.sampler',
    'accountant': 'dp.accountant',
    'target_epsilon': 'dp.target_epsilon',
    'secure_noise': 'dp.secure_noise',
    'seed': 'seed',
    # What turns conversations into rows: checked before the fingerprint,
    # which they change, so that the error names them.
    'lm_pretrained': 'lm.pretrained',
    'lm_max_length': 'lm.max_length',
    'num_examples': 'data.name',
    'dataset': 'data.name',
    'dataset_fingerprint': 'data.name',
    'pca_components': 'dp.pca_components',
    'pca_noise_multiplier': 'dp.pca_noise_multiplier',
    'normalization_noise_multiplier': 'dp.normalization_noise_multiplier',
    'normalization_clip': 'dp.normalization_clip',
    'privacy_unit': 'lm.privacy_unit',
    # Outside the link: the setup release's DpEvent and q follow from the
    # fields above.
    'setup_event': 'dp.pca_noise_multiplier',
    'sampling_probability': 'dp.batch_size',
}
# Checkpoints written before releases (or language models) existed had none.
_ABSENT_DEFAULTS = dict(private_releases.NO_RELEASES, privacy_unit='example',
                        lm_pretrained=None, lm_max_length=None,
                        noise_schedule=NoiseSchedule().to_json(),
                        adaptive_clipping=None, clip_rule='global',
                        per_layer_clip_split=None)


def _absent_default(saved: dict, key: str):
  """What a checkpoint written before `key` existed meant by it."""
  if key == 'noise_mechanism':  # Before links: adaptive iff its settings.
    return 'gaussian' if saved.get('adaptive_clipping') is None else 'adaptive'
  return _ABSENT_DEFAULTS.get(key)


def privacy_unit(config) -> str:
  """What one DP example is: an image, a conversation or a user."""
  return (config.lm.privacy_unit if config.task == 'language_model'
          else 'example')


def _lm_rows(config) -> dict:
  language_model = config.task == 'language_model'
  return {'lm_pretrained': config.lm.pretrained if language_model else None,
          'lm_max_length': config.lm.max_length if language_model else None}


def privacy_settings(mechanism, dataset, config) -> dict:
  """The settings that decide the guarantee, JSON-ready."""
  return {
      'noise_multiplier': mechanism.noise_multiplier,
      'clip_norm': mechanism.clip_norm if math.isfinite(mechanism.clip_norm)
                   else None,
      'expected_batch_size': mechanism.expected_batch_size,
      'sampling_probability': mechanism.sampling_probability,
      'delta': mechanism.delta,
      'sampler': mechanism.sampler.name,
      'neighboring_relation': mechanism.neighboring_relation.name.lower(),
      'accountant': mechanism.accountant,
      'target_epsilon': mechanism.target_epsilon,
      'secure_noise': bool(config.dp.secure_noise),
      # The sampler's and noise's seed is secret under secure_noise; the
      # config seed then seeds the initialisation only.
      'seed': None if config.dp.secure_noise else config.seed,
      'num_examples': dataset.num_train,
      'dataset': dataset.name,
      'dataset_fingerprint': dataset.fingerprint(),
      'privacy_unit': privacy_unit(config),
      **_lm_rows(config),
      # Releases before step 1 (DP-PCA, released normalisation): the
      # settings that decide them, and their DpEvent as JSON.
      **{key: config.dp[key] for key in private_releases.NO_RELEASES},
      'setup_event': mechanism.summary()['setup_event'],
      # The noise link's and the clip rule's own.
      **mechanism.privacy_settings(),
  }


def fields() -> dict:
  """The config field behind every privacy setting: the fixed ones, and
  those every registered noise link and clip rule declares."""
  out = dict(_FIELDS)
  for contract in (*noise.LINKS.values(), *clipping.RULES.values()):
    for key, field in contract.FIELDS.items():
      if out.setdefault(key, field) != field:
        raise ValueError(f'{contract.__name__} says {key} is {field}, '
                         f'another contract says {out[key]}')
  return out


def check_resume(saved: dict, current: dict) -> None:
  """Raises ConfigError naming the first privacy setting that changed.

  Every key of `current` is compared (it may hold only some keys: a check
  before the mechanism is built); a key without a config field is an
  error, so a new setting can never be skipped.
  """
  fields_of = fields()
  order = [k for k in fields_of if k in current] + [
      k for k in current if k not in fields_of]
  for key in order:
    if key not in fields_of:
      raise ValueError(f'privacy setting {key!r} has no config field')
    field = fields_of[key]
    before = saved.get(key, _absent_default(saved, key))
    if before != current[key]:
      raise ConfigError(
          field,
          f'the checkpoint was written with {key}={before!r}, this '
          f'config gives {key}={current[key]!r}; resuming would change '
          'the privacy guarantee of the run',
          f'set {field} back to the checkpoint\'s value to resume, or start '
          'a new run in a new --workdir')


def settings_in_config(config) -> dict:
  """The privacy settings readable from `config` alone (no mechanism)."""
  return {'sampler': noise.sampler_name(config.dp),
          'accountant': config.dp.accountant,
          'delta': config.dp.delta, 'secure_noise': bool(config.dp.secure_noise),
          'seed': None if config.dp.secure_noise else config.seed,
          'privacy_unit': privacy_unit(config), **_lm_rows(config)}


def config_hash(config) -> str:
  """SHA-256 of the resolved config as canonical JSON."""
  canonical = json.dumps(json.loads(config.to_json()), sort_keys=True,
                         separators=(',', ':'))
  return hashlib.sha256(canonical.encode('utf-8')).hexdigest()


def code_version() -> str:
  """jaxdp's version and a SHA-256 over its Python sources."""
  root = pathlib.Path(__file__).parent.parent  # The whole jaxdp package.
  digest = hashlib.sha256()
  for path in sorted(root.rglob('*.py')):
    digest.update(str(path.relative_to(root)).encode('utf-8'))
    digest.update(path.read_bytes())
  return f'jaxdp {__version__} sources sha256:{digest.hexdigest()[:16]}'

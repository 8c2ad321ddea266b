"""The real training path: train_and_evaluate, end to end."""

import json
import os

import pytest
import tensorflow_datasets as tfds

from configs import base
from jaxdp.errors import ConfigError
from jaxdp.train import train_and_evaluate

_QUIET = lambda line: None


def test_default_experiment_shortened_learns_within_budget(tmp_path):
  config = base.get_config()  # Calibrated σ for ε = 3, δ = 1e-5.
  config.train.num_epochs = 10.0
  results = train_and_evaluate(config, str(tmp_path), log=_QUIET)
  assert results['epsilon'] <= config.dp.target_epsilon
  assert results['epsilon'] > 0.95 * config.dp.target_epsilon  # Tight.
  # Measured 0.86-0.91 over seeds 0-4 for this shortened run; chance is 0.1.
  assert results['accuracy'] >= 0.80
  assert results['steps'] == 57
  assert len(results['history']) >= 1


def test_same_seed_gives_the_same_numbers(small_config, tmp_path):
  first = train_and_evaluate(small_config, str(tmp_path / 'a'), log=_QUIET)
  second = train_and_evaluate(small_config, str(tmp_path / 'b'), log=_QUIET)
  for key in ('accuracy', 'test_loss', 'epsilon', 'noise_multiplier'):
    assert first[key] == second[key]
  small_config.seed = 1
  third = train_and_evaluate(small_config, str(tmp_path / 'c'), log=_QUIET)
  assert third['test_loss'] != first['test_loss']


def test_results_and_config_are_written(small_config, tmp_path):
  results = train_and_evaluate(small_config, str(tmp_path), log=_QUIET)
  with open(tmp_path / 'results.json') as f:
    written = json.load(f)
  assert written['accuracy'] == results['accuracy']
  for key in ('accuracy', 'epsilon', 'delta', 'noise_multiplier', 'steps',
              'wall_seconds', 'sampler', 'accountant'):
    assert key in written
  with open(tmp_path / 'config.json') as f:
    assert json.load(f)['dp']['noise_multiplier'] == 1.0


def test_tfds_path_trains_the_tanh_cnn_under_mock_data(small_config, tmp_path):
  config = small_config
  config.data.name, config.data.source = 'mnist', 'tfds'
  config.model.name = 'tanh_cnn'
  config.dp.batch_size = 4
  config.train.num_steps = 2
  with tfds.testing.mock_data(num_examples=16):
    results = train_and_evaluate(config, str(tmp_path), log=_QUIET)
  assert results['steps'] == 2 and results['num_params'] == 26_010
  assert 0.0 <= results['accuracy'] <= 1.0


def test_bad_settings_fail_before_training(small_config, tmp_path):
  small_config.dp.delta = 0.01
  with pytest.raises(ConfigError, match='dp.delta'):
    train_and_evaluate(small_config, str(tmp_path), log=_QUIET)
  assert not os.path.exists(tmp_path / 'results.json')

"""Chat data, the language-model task under the DP trainer, generation, exposure."""

import json
import math
import os

import jax
import numpy as np
import pytest

from configs import tiny_lm
from jaxdp.train import checkpointing
from jaxdp.train import loop as train
from jaxdp.errors import ConfigError
from jaxdp.lm import chat
from jaxdp.lm import conversations
from jaxdp.lm import exposure
from jaxdp.lm import generate
from jaxdp.lm import memorisation
from jaxdp.lm import synthetic_conversations
from jaxdp.lm import task as lm_task
from jaxdp.lm import tiny
from jaxdp import tasks


@pytest.fixture(scope='module')
def tokenizer():
  return tiny.public_tokenizer()


def test_only_assistant_tokens_are_learned(tokenizer):
  messages = [{'role': 'system', 'content': 'Be brief.'},
              {'role': 'user', 'content': 'Block my card.'},
              {'role': 'assistant', 'content': '<tool_call>{"name": "x"}'
               '</tool_call>'},
              {'role': 'tool', 'content': '{"status": "blocked"}'},
              {'role': 'assistant', 'content': 'Done.'}]
  ids, learned = chat.encode(tokenizer, tiny.CHATML, messages, 1000)
  learned_text = tokenizer.decode(ids[learned].tolist(),
                                  skip_special_tokens=False)
  assert learned_text == ('<tool_call>{"name": "x"}</tool_call><|im_end|>\n'
                          'Done.<|im_end|>\n')
  whole = tokenizer.decode(ids.tolist(), skip_special_tokens=False)
  assert whole == chat.render(tiny.CHATML, messages)
  short_ids, short_learned = chat.encode(tokenizer, tiny.CHATML, messages, 7)
  np.testing.assert_array_equal(short_ids, ids[:7])
  np.testing.assert_array_equal(short_learned, learned[:7])


def test_non_incremental_template_is_refused(tokenizer):
  reversed_template = ("{% for m in messages|reverse %}{{ m['content'] }}"
                       "{% endfor %}")
  messages = [{'role': 'user', 'content': 'a'},
              {'role': 'assistant', 'content': 'b'}]
  with pytest.raises(chat.ChatFormatError, match='incrementally'):
    chat.encode(tokenizer, reversed_template, messages, 100)


def test_user_unit_packs_each_users_conversations(tokenizer):
  train, test, _ = synthetic_conversations.make(num_users=12,
                                                num_test_users=2, seed=5)
  by_conversation = conversations.tokenize(
      train, test, tokenizer, tiny.CHATML, 400, 'conversation', 'd', 's')
  by_user = conversations.tokenize(
      train, test, tokenizer, tiny.CHATML, 400, 'user', 'd', 's')
  users = {c['user'] for c in train}
  assert by_conversation.num_train == len(train)
  assert by_user.num_train == len(users)
  # Every conversation is in its user's row, unless it did not fit.
  kept = int(sum(r.max() for r in by_user.train.segments))
  assert kept + by_user.left_out == len(train)
  assert by_user.train.learned.sum() <= by_conversation.train.learned.sum()
  assert not (by_user.train.learned & (by_user.train.segments == 0)).any()


def test_bad_jsonl_names_the_line(tmp_path):
  (tmp_path / 'train.jsonl').write_text(
      '{"messages": [{"role": "user", "content": "hi"}]}\n'
      '{"messages": [{"role": "robot", "content": "hi"}]}\n')
  (tmp_path / 'test.jsonl').write_text('{"messages": []}\n')
  with pytest.raises(ConfigError, match='line 2.*robot'):
    conversations.read_folder(str(tmp_path))


def test_user_unit_needs_user_ids(tokenizer):
  train = [{'messages': [{'role': 'user', 'content': 'hi'}]}]
  with pytest.raises(ConfigError, match='lm.privacy_unit'):
    conversations.tokenize(train, train, tokenizer, tiny.CHATML, 64, 'user',
                           'd', 's')


@pytest.mark.parametrize('field,value,match', [
    ('lm.lora_targets', ('q', 'wq'), 'lm.lora_targets'),
    ('lm.base_dtype', 'float8', 'lm.base_dtype'),
    ('data.name', 'mnist', 'data.name'),
    ('lm.privacy_unit', 'household', 'lm.privacy_unit'),
])
def test_bad_lm_settings_name_the_field(tmp_path, field, value, match):
  config = tiny_lm.get_config()
  section, name = field.split('.')
  config[section][name] = value
  with pytest.raises(ConfigError, match=match):
    train.train_and_evaluate(config, str(tmp_path))
  assert not os.path.exists(tmp_path / 'privacy_ledger.jsonl')


def _quick_config(**overrides):
  config = tiny_lm.get_config()
  config.lm.max_length = 160
  config.dp.batch_size = 8
  config.train.num_steps = 2
  config.eval.every_steps = 0
  config.eval.batch_size = 64
  # A fixed σ: calibrating a small σ to ε under PLD takes tens of seconds.
  config.dp.noise_multiplier = 1.0
  config.dp.target_epsilon = None
  for key, value in overrides.items():
    section, name = key.split('.')
    config[section][name] = value
  return config


def test_dp_lora_run_checkpoints_adapters_and_refuses_another_unit(tmp_path):
  config = _quick_config()
  results = train.train_and_evaluate(config, str(tmp_path), log=lambda _: None)
  assert results['status'] == 'completed'
  assert 0 < results['epsilon'] < 1 and results['privacy_unit'] == 'conversation'
  assert results['num_frozen_params'] > 10 * results['num_params'] > 0
  assert math.isfinite(results['test_loss'])
  # The checkpoint holds the adapters, not the frozen model.
  saved = checkpointing.Checkpointer(str(tmp_path), None)
  params = saved.restore_arrays(saved.latest())['params']
  names = {jax.tree_util.keystr(p) for p, _ in
           jax.tree_util.tree_flatten_with_path(params)[0]}
  assert names and all('lora_' in n for n in names)
  # The ledger records the unit; resuming with another unit is refused.
  with open(tmp_path / 'privacy_ledger.jsonl') as f:
    start = json.loads(f.readline())
  assert start['data']['privacy']['privacy_unit'] == 'conversation'
  with pytest.raises(ConfigError, match='lm.privacy_unit'):
    train.train_and_evaluate(_quick_config(**{'lm.privacy_unit': 'user'}),
                             str(tmp_path))


def test_user_level_task_samples_users():
  """The trainer's N (which the sampler and accountant use) counts users."""
  task = tasks.build_task(_quick_config(**{'lm.privacy_unit': 'user',
                                           'lm.max_length': 320}))
  train_set, _, _ = synthetic_conversations.make()
  assert task.results['privacy_unit'] == 'user'
  assert task.num_train == len({c['user'] for c in train_set})
  statistics = task.results['non_private_data_statistics']
  assert statistics['train_conversations'] == len(train_set)
  # A training row is one user's conversations, as packed segments.
  tokens, learned, segments = task.train_inputs(
      np.arange(4), np.array([True, True, True, False]), np.arange(4), 0)
  assert (segments[3] == 0).all() and not learned[3].any()
  assert segments[:3].max() >= 1


def test_greedy_generation_is_deterministic_and_stops():
  pretrained = tiny.tiny_pretrained(dim=32)
  model = lm_task.build_model(_quick_config(**{'lm.lora_rank': 0}),
                              pretrained.config)
  params = jax.tree_util.tree_map(np.asarray, pretrained.params)
  prompt = chat.generation_prompt(pretrained.tokenizer, pretrained.chat_template,
                                  [{'role': 'user', 'content': 'Hello'}])
  first = generate.generate(model.apply, params, prompt, 12, pretrained.eos_id)
  assert first == generate.generate(model.apply, params, prompt, 12,
                                    pretrained.eos_id)
  assert 1 <= len(first) <= 12
  # A zero output head makes token 0 the greedy choice: with 0 as the stop
  # token, generation stops at once.
  params['lm_head']['kernel'] = np.zeros_like(params['lm_head']['kernel'])
  assert generate.generate(model.apply, params, prompt, 12, 0) == [0]


def test_exposure_estimates():
  rng = np.random.default_rng(0)
  candidates = rng.normal(50.0, 3.0, 2000)
  bits = 6 * math.log2(10)
  memorised, = exposure.exposures_of(20.0, candidates, bits)
  assert memorised['sampled_rank_exposure'] > 19.0
  assert memorised['extrapolated_exposure'] > 19.0
  # Secrets drawn like the candidates: exposure averages 1 / ln 2.
  chance = exposure.exposures_of(rng.normal(50.0, 3.0, 2000), candidates,
                                 bits)
  for estimate in ('sampled_rank_exposure', 'extrapolated_exposure'):
    mean = np.mean([c[estimate] for c in chance])
    assert abs(mean - exposure.CHANCE) < 0.15, (estimate, mean)


def test_written_demo_files_are_the_bundled_set(tmp_path):
  """make_conversations' files, read as chat_jsonl, are synthetic_support."""
  train_set, test_set, canaries = synthetic_conversations.make()
  synthetic_conversations.write(str(tmp_path), train_set, test_set, canaries)
  model = tiny.tiny_pretrained(dim=16, num_layers=1)
  bundled = _quick_config()
  files = _quick_config(**{'data.name': 'chat_jsonl',
                           'data.data_dir': str(tmp_path)})
  a = lm_task.load_conversations(bundled, model)
  b = lm_task.load_conversations(files, model)
  assert a.fingerprint() == b.fingerprint() and a.num_train == len(train_set)
  assert synthetic_conversations.read_canaries(str(tmp_path)) == canaries
  assert [c.repeats for c in canaries] == [1, 4, 16, 0, 0, 0]
  planted = sum(c['messages'] == k.messages() for c in train_set
                for k in canaries)
  assert planted == 1 + 4 + 16


@pytest.mark.slow
def test_exposure_command_end_to_end(tmp_path):
  """The three runs and the table, at 2 steps (about 2 minutes)."""
  config = _quick_config()
  results = memorisation.run(config, str(tmp_path), num_candidates=30,
                             user_max_length=320, log=lambda _: None)
  assert set(results['runs']) == {'non_private', 'dp', 'dp_user'}
  assert results['runs']['dp_user']['privacy_unit'] == 'user'
  assert len(results['exposures']) == 3 * 6
  assert 'per user' in memorisation.markdown(results)


def test_frozen_base_in_bfloat16_trains_float32_adapters():
  config = _quick_config(**{'lm.base_dtype': 'bfloat16'})
  pretrained = tiny.tiny_pretrained(dim=16, num_layers=1)
  model = lm_task.build_model(config, pretrained.config)
  adapters, frozen = lm_task.initial_params(config, model, pretrained.params,
                                            jax.random.key(0))
  assert {x.dtype for x in jax.tree_util.tree_leaves(frozen)} == {
      np.dtype('bfloat16')}
  assert {x.dtype for x in jax.tree_util.tree_leaves(adapters)} == {
      np.dtype('float32')}
  tokens = np.array([[5, 6, 7, 8, 9]], np.int32)
  loss = lm_task.unit_loss(model.apply)(
      lm_task.lora.merge(frozen, adapters),
      (tokens, np.ones_like(tokens, bool), np.ones_like(tokens)))
  assert loss.dtype == np.float32 and np.isfinite(loss).all()

"""Chat data as the trainer sees it: one row of tokens per privacy unit.

Files: `train.jsonl` and `test.jsonl` in one folder, a conversation per line:
{"messages": [{"role": ..., "content": ...}, ...], "user": "<id>"}. `user` is
needed only when the privacy unit is the user.

The privacy unit decides what a row is, and so what one "example" of DP-SGD
is (sampled, clipped and counted by the accountant as one):

* `conversation` (default): a row is one conversation, cut at `max_length`
  tokens. ε bounds what the model reveals about any one conversation.
* `user`: a row packs all of a user's conversations, each its own segment
  (tokens attend only within their conversation and positions restart), until
  `max_length` tokens; conversations that do not fit are left out. The
  sampler draws users, each user's loss (the mean over all their assistant
  tokens) is clipped once, and ε bounds
  what the model reveals about any one user, however many conversations they
  had. Leaving out a user's extra conversations depends on that user's data
  only, so it costs nothing.
"""

import collections
import dataclasses
import hashlib
import json
import os

import numpy as np

from jaxdp.errors import ConfigError
from jaxdp.errors import MissingDataError
from jaxdp.lm import chat

UNITS = ('conversation', 'user')
FILES = ('train.jsonl', 'test.jsonl')


@dataclasses.dataclass(frozen=True)
class TokenRows:
  """Rows of [n, max_length]: token ids, learned-token mask, segment ids.

  Padding has segment 0 and is never learned; real tokens have segment ≥ 1.
  """

  tokens: np.ndarray
  learned: np.ndarray
  segments: np.ndarray

  def __len__(self) -> int:
    return len(self.tokens)

  def take(self, rows: np.ndarray) -> tuple:
    return self.tokens[rows], self.learned[rows], self.segments[rows]


@dataclasses.dataclass(frozen=True)
class ChatDataset:
  name: str
  source: str
  unit: str
  train: TokenRows
  test: TokenRows
  left_out: int  # Training conversations that did not fit their user's row.
  train_conversations: int

  @property
  def num_train(self) -> int:
    return len(self.train)

  def fingerprint(self) -> str:
    digest = hashlib.sha256(self.unit.encode())
    for array in (self.train.tokens, self.train.learned, self.train.segments):
      digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def read_jsonl(path: str) -> list[dict]:
  """Conversations of a JSONL file, each checked (errors name the line)."""
  out = []
  with open(path, encoding='utf-8') as f:
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      where = f'{path} line {number}'
      try:
        record = json.loads(line)
      except json.JSONDecodeError as e:
        raise ConfigError('data.data_dir', f'{where} is not JSON ({e})',
                          'write one JSON object per line') from e
      if not isinstance(record, dict):
        raise ConfigError('data.data_dir', f'{where} is not a JSON object',
                          'write {"messages": [...], "user": "..."} per line')
      try:
        chat.check_messages(record.get('messages'), where)
      except chat.ChatFormatError as e:
        raise ConfigError('data.data_dir', str(e), 'see jaxdp/lm/chat.py '
                          'for the message format') from e
      out.append(record)
  if not out:
    raise ConfigError('data.data_dir', f'{path} holds no conversation',
                      'write at least one conversation per file')
  return out


def read_folder(directory: str) -> tuple[list, list]:
  """(train, test) conversations of `directory`'s two JSONL files."""
  paths = [os.path.join(directory, name) for name in FILES]
  missing = [p for p in paths if not os.path.exists(p)]
  if missing:
    raise MissingDataError('data.data_dir', f'no {", ".join(missing)}',
                           'point data.data_dir at a folder with train.jsonl '
                           'and test.jsonl, or make the demo set with python '
                           '-m experiments.make_conversations')
  return read_jsonl(paths[0]), read_jsonl(paths[1])


def _rows(encoded: list, max_length: int) -> TokenRows:
  """Packs each row's list of (ids, learned) into [n, max_length] arrays."""
  n = len(encoded)
  tokens = np.zeros((n, max_length), np.int32)
  learned = np.zeros((n, max_length), bool)
  segments = np.zeros((n, max_length), np.int32)
  for i, parts in enumerate(encoded):
    at = 0
    for segment, (ids, mask) in enumerate(parts, 1):
      tokens[i, at:at + len(ids)] = ids
      learned[i, at:at + len(ids)] = mask
      segments[i, at:at + len(ids)] = segment
      at += len(ids)
  return TokenRows(tokens, learned, segments)


def tokenize(train: list, test: list, tokenizer, template: str,
             max_length: int, unit: str, name: str,
             source: str) -> ChatDataset:
  """The rows of both splits for privacy unit `unit` (see the docstring)."""
  if unit not in UNITS:
    raise ConfigError('lm.privacy_unit', f'unknown unit {unit!r}',
                      f'use one of {", ".join(UNITS)}')
  def encode(conversation):
    try:
      return chat.encode(tokenizer, template, conversation['messages'],
                         max_length)
    except chat.ChatFormatError as e:
      raise ConfigError('lm.pretrained', f'its chat template cannot render '
                        f'the conversation {conversation["messages"][:1]}...: '
                        f'{e}', 'use a checkpoint whose template takes these '
                        'roles, or change the conversation') from e
  test_rows = _rows([[encode(c)] for c in test], max_length)
  left_out = 0
  if unit == 'conversation':
    train_rows = _rows([[encode(c)] for c in train], max_length)
  else:
    by_user = collections.OrderedDict()
    for number, c in enumerate(train, 1):
      if not isinstance(c.get('user'), str) or not c['user']:
        raise ConfigError('lm.privacy_unit', f'training conversation {number} '
                          'has no "user" string, so it cannot be grouped by '
                          'user', 'add "user" to every line of train.jsonl, '
                          'or set lm.privacy_unit=conversation')
      by_user.setdefault(c['user'], []).append(c)
    packed = []
    for conversations in by_user.values():
      parts, used = [], 0
      for c in conversations:
        ids, mask = encode(c)
        if used + len(ids) > max_length:
          left_out += 1
          continue
        parts.append((ids, mask))
        used += len(ids)
      packed.append(parts)
    train_rows = _rows(packed, max_length)
  return ChatDataset(name, source, unit, train_rows, test_rows, left_out,
                     len(train))

"""A synthetic set of customer-support and tool-use conversations, with canaries.

Made from a seed, offline, in a second: a fictional bank's support assistant
answers users, calling tools (`lookup_account`, `block_card`, `list_payments`,
`update_address`) whose answers come back as `tool` messages. Everything is
invented; no real person or account appears.

Canaries (Carlini et al. 2019, "The Secret Sharer"): secret i is a random
`digits`-digit account number that one user, `canary-i`, reveals to the
assistant, and the assistant repeats in its reply:

    user:      Hi, this is <name>. Please read back the account number on file.
    assistant: The account number on file for <name> is 4 8 2 9 1 7.

Canary i is planted in `repeats[i]` conversations of that one user (the
Secret Sharer's insertion counts). The exposure test later ranks the secret
among random numbers of the same format by the model's perplexity given the
same prefix. Control canaries (same format, never planted) give the exposure
of chance.
"""

import dataclasses
import json
import os

import numpy as np

_FIRST = ('Ada', 'Bram', 'Chen', 'Dana', 'Elif', 'Farid', 'Greta', 'Hugo',
          'Ines', 'Jonas', 'Kemal', 'Lena', 'Mateo', 'Nadia', 'Omar', 'Priya',
          'Quinn', 'Rosa', 'Sven', 'Tara', 'Uma', 'Viktor', 'Wen', 'Yara')
_LAST = ('Abara', 'Berg', 'Castillo', 'Dubois', 'Eriksen', 'Fontaine', 'Gupta',
         'Haddad', 'Ivanova', 'Jansen', 'Kowalski', 'Lindqvist', 'Moreau',
         'Nakamura', 'Okafor', 'Petrov', 'Rossi', 'Schmidt', 'Tanaka',
         'Varga', 'Whitfield', 'Yilmaz', 'Zhou')
_CITIES = ('Lisbon', 'Oslo', 'Lyon', 'Porto', 'Gdansk', 'Leeds', 'Graz',
           'Utrecht', 'Bilbao', 'Tampere')
_STREETS = ('Harbour Road', 'Elm Street', 'Mill Lane', 'Station Square',
            'Canal Walk', 'Orchard Way', 'King Street', 'Bridge Row')
_MERCHANTS = ('GreenGrocer', 'CityRail', 'BookNook', 'FuelNow', 'CafeLuna',
              'StreamBox', 'PharmaPlus', 'HomeWare')
SYSTEM = ('You are the support assistant of Northwind Bank. Use the tools '
          'when you need account data; never invent numbers.')
CANARY_PROMPT = 'Hi, this is {name}. Please read back the account number on file.'
CANARY_REPLY = 'The account number on file for {name} is {secret}.'


@dataclasses.dataclass(frozen=True)
class Canary:
  name: str  # The fictional customer the secret belongs to.
  secret: str  # The digits, as written in the reply ("4 8 2 9 1 7").
  repeats: int  # Conversations it was planted in (0: a control canary).

  def messages(self) -> list:
    return [{'role': 'system', 'content': SYSTEM},
            {'role': 'user', 'content': CANARY_PROMPT.format(name=self.name)},
            {'role': 'assistant',
             'content': CANARY_REPLY.format(name=self.name,
                                            secret=self.secret)}]

  def to_json(self) -> dict:
    return dataclasses.asdict(self)


def format_secret(digits) -> str:
  """Digits spaced out, so that every tokenizer sees one token per digit."""
  return ' '.join(str(int(d)) for d in digits)


def _tool_call(name: str, **arguments) -> str:
  return '<tool_call>' + json.dumps({'name': name, 'arguments': arguments}) + (
      '</tool_call>')


def _conversation(rng: np.random.Generator, name: str) -> list:
  """One ordinary support conversation of customer `name`."""
  account = ''.join(str(d) for d in rng.integers(0, 10, 8))
  pick = lambda options: options[rng.integers(len(options))]
  kind = rng.integers(4)
  system = {'role': 'system', 'content': SYSTEM}
  if kind == 0:
    balance = f'{rng.integers(20, 9000)}.{rng.integers(0, 100):02d}'
    return [system,
            {'role': 'user', 'content': f'Hello, I am {name}. What is my '
             'current balance?'},
            {'role': 'assistant', 'content': _tool_call(
                'lookup_account', customer=name, field='balance')},
            {'role': 'tool', 'content': json.dumps(
                {'customer': name, 'balance_eur': balance})},
            {'role': 'assistant', 'content': f'Your current balance is '
             f'{balance} euros. Is there anything else I can help with?'}]
  if kind == 1:
    return [system,
            {'role': 'user', 'content': f'My card was stolen in '
             f'{pick(_CITIES)}. Please block it. I am {name}.'},
            {'role': 'assistant', 'content': _tool_call(
                'block_card', customer=name, reason='stolen')},
            {'role': 'tool', 'content': json.dumps(
                {'status': 'blocked', 'replacement_days': int(
                    rng.integers(3, 8))})},
            {'role': 'assistant', 'content': 'I have blocked your card. A '
             'replacement is on its way; you will get it within a week.'}]
  if kind == 2:
    merchant, amount = pick(_MERCHANTS), int(rng.integers(5, 300))
    return [system,
            {'role': 'user', 'content': f'I see a payment to {merchant} I do '
             f'not recognise. Can you check? ({name})'},
            {'role': 'assistant', 'content': _tool_call(
                'list_payments', customer=name, merchant=merchant)},
            {'role': 'tool', 'content': json.dumps(
                [{'merchant': merchant, 'amount_eur': amount,
                  'day': int(rng.integers(1, 29))}])},
            {'role': 'assistant', 'content': f'There is one payment of '
             f'{amount} euros to {merchant}. If you did not make it, I can '
             'open a dispute for you.'},
            {'role': 'user', 'content': 'Yes please, open a dispute.'},
            {'role': 'assistant', 'content': 'Done: the dispute is open and '
             'you will hear from us within ten working days.'}]
  street = f'{rng.integers(1, 200)} {pick(_STREETS)}, {pick(_CITIES)}'
  return [system,
          {'role': 'user', 'content': f'Hi, {name} here. I moved to {street}.'
           ' Please update my address.'},
          {'role': 'assistant', 'content': _tool_call(
              'update_address', customer=name, account=account,
              address=street)},
          {'role': 'tool', 'content': json.dumps({'status': 'updated'})},
          {'role': 'assistant', 'content': f'Your address is now {street}. '
           'Your cards and statements will go there from now on.'}]


def make(num_users: int = 400, num_test_users: int = 40,
         repeats: tuple = (1, 4, 16), num_controls: int = 3, digits: int = 6,
         seed: int = 0) -> tuple[list, list, list]:
  """(train, test, canaries): JSON-ready conversations and the canaries.

  Each ordinary user has 1 to 3 conversations; canary user i has
  `repeats[i]` copies of its canary conversation. Test users are disjoint
  from training users and have no canaries.
  """
  rng = np.random.default_rng(seed)
  names = [f'{f} {l}' for f in _FIRST for l in _LAST]
  order = rng.permutation(len(names))
  needed = num_users + num_test_users + len(repeats) + num_controls
  if needed > len(names):
    raise ValueError(f'at most {len(names)} distinct customers, asked for '
                     f'{needed}')
  people = [names[i] for i in order[:needed]]

  def user_conversations(user_id: str, name: str) -> list:
    return [{'user': user_id, 'messages': _conversation(rng, name)}
            for _ in range(int(rng.integers(1, 4)))]

  train, test = [], []
  for u in range(num_users):
    train += user_conversations(f'user-{u}', people[u])
  for u in range(num_test_users):
    test += user_conversations(f'test-user-{u}', people[num_users + u])
  canaries = []
  base = num_users + num_test_users
  for i, count in enumerate(tuple(repeats) + (0,) * num_controls):
    canary = Canary(people[base + i],
                    format_secret(rng.integers(0, 10, digits)), int(count))
    canaries.append(canary)
    train += [{'user': f'canary-{i}', 'messages': canary.messages()}
              for _ in range(canary.repeats)]
  shuffled = rng.permutation(len(train))
  return [train[i] for i in shuffled], test, canaries


def write(directory: str, train: list, test: list, canaries: list) -> None:
  """train.jsonl, test.jsonl and canaries.json in `directory`."""
  os.makedirs(directory, exist_ok=True)
  for name, rows in (('train.jsonl', train), ('test.jsonl', test)):
    with open(os.path.join(directory, name), 'w', encoding='utf-8') as f:
      for row in rows:
        f.write(json.dumps(row) + '\n')
  with open(os.path.join(directory, 'canaries.json'), 'w') as f:
    json.dump([c.to_json() for c in canaries], f, indent=1)


def read_canaries(directory: str) -> list:
  with open(os.path.join(directory, 'canaries.json')) as f:
    return [Canary(**c) for c in json.load(f)]

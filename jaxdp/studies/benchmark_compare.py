"""Other DP libraries' steps on the benchmark's models, for side-by-side rows.

Optional: needs `pip install -e .[compare]` (jax-privacy, Opacus, PyTorch).
Each builds one full training step (clipped gradients, noise, SGD update).

* `jax_privacy`: jax_privacy 2.0's `clipped_grad` (per-example gradients
  by vmap), then the same noise and SGD as jaxdp, jitted.
* `opacus_hooks`, `opacus_ghost`: Opacus 1.6 on the equivalent PyTorch model,
  per-sample gradients from hooks, or ghost clipping (two backward passes).
  Only the MLP, the CNN and the WRN have PyTorch twins here.
"""

import importlib.util
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdp import noise

COMPARE_METHODS = ('jax_privacy', 'opacus_hooks', 'opacus_ghost')


def available() -> dict:
  """Which comparison libraries can be imported here."""
  found = lambda name: importlib.util.find_spec(name) is not None
  return {'jax_privacy': found('jax_privacy'),
          'opacus_hooks': found('opacus') and found('torch'),
          'opacus_ghost': found('opacus') and found('torch')}


def jax_privacy_step(problem, batch_size: int):
  """(jitted step, tx): jax_privacy's clipped_grad + jaxdp's noise + SGD.

  The step has the signature of jaxdp's own train step, so the benchmark times
  and measures it the same way.
  """
  from jax_privacy import clipping as jp_clipping  # Optional dependency.
  summed_loss = lambda params, batch: jnp.sum(problem.batch_loss(params,
                                                                   batch))
  clipped = jp_clipping.clipped_grad(summed_loss, l2_clip_norm=1.0,
                                     batch_argnums=1, keep_batch_dim=True)
  tx = optax.chain(
      noise.add_noise_and_normalize(1.0, batch_size, jax.random.key(0)),
      optax.sgd(0.1))

  def step(state, batch, frozen=None):
    del frozen  # The comparison problems have their frozen part baked in.
    grads = clipped(state.params, batch['inputs'])
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    return state.replace(params=optax.apply_updates(state.params, updates),
                         opt_state=opt_state, step=state.step + 1), {}

  return jax.jit(step, donate_argnums=0), tx


def _torch_wide_resnet(width: int, depth: int = 16, groups: int = 16):
  """jaxdp.models.WideResNet's layers in PyTorch (same shapes, own init)."""
  import torch  # Optional dependency.
  nn = torch.nn

  class Block(nn.Module):

    def __init__(self, c_in, c_out, stride):
      super().__init__()
      self.norm_1 = nn.GroupNorm(groups, c_in)
      self.conv_1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
      self.norm_2 = nn.GroupNorm(groups, c_out)
      self.conv_2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
      self.shortcut = (None if c_in == c_out and stride == 1 else
                       nn.Conv2d(c_in, c_out, 1, stride, bias=False))

    def forward(self, x):
      pre = torch.relu(self.norm_1(x))
      y = self.conv_2(torch.relu(self.norm_2(self.conv_1(pre))))
      return (x if self.shortcut is None else self.shortcut(pre)) + y

  layers, c_in = [nn.Conv2d(3, 16, 3, 1, 1, bias=False)], 16
  for stage, c_out in enumerate((16 * width, 32 * width, 64 * width)):
    for i in range((depth - 4) // 6):
      layers.append(Block(c_in, c_out, 2 if stage > 0 and i == 0 else 1))
      c_in = c_out
  layers += [nn.GroupNorm(groups, c_in), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
             nn.Flatten(), nn.Linear(c_in, 10)]
  return nn.Sequential(*layers)


def _torch_model(problem):
  import torch  # Optional dependency.
  nn = torch.nn
  name = problem.name
  if name == 'wrn16_4':
    return _torch_wide_resnet(problem.width)
  if name == 'mlp':
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 512), nn.ReLU(),
                         nn.Linear(512, 10))
  if name == 'cnn':  # Same shapes as jaxdp.models.TanhCNN ('SAME' = pad 3).
    return nn.Sequential(
        nn.Conv2d(1, 16, 8, stride=2, padding=3), nn.Tanh(),
        nn.MaxPool2d(2, 1), nn.Conv2d(16, 32, 4, stride=2), nn.Tanh(),
        nn.MaxPool2d(2, 1), nn.Flatten(), nn.Linear(512, 32), nn.Tanh(),
        nn.Linear(32, 10))
  return None


def opacus_step(problem, batch_size: int,
                mode: str) -> Optional[Callable[[], None]]:
  """A callable running one Opacus step on the PyTorch twin of `problem`.

  None if there is no twin.
  """
  import torch  # Optional dependency.
  from opacus import PrivacyEngine  # Optional dependency.
  model = _torch_model(problem)
  if model is None:
    return None
  images, labels = problem.inputs
  x = torch.from_numpy(np.asarray(images).transpose(0, 3, 1, 2).copy())
  y = torch.from_numpy(np.asarray(labels).astype(np.int64))
  loader = torch.utils.data.DataLoader(
      torch.utils.data.TensorDataset(x, y), batch_size=batch_size)
  optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
  engine = PrivacyEngine()
  kwargs = dict(module=model, optimizer=optimizer, data_loader=loader,
                noise_multiplier=1.0, max_grad_norm=1.0,
                poisson_sampling=False)
  if mode == 'ghost':
    model, optimizer, criterion, _ = engine.make_private(
        criterion=torch.nn.CrossEntropyLoss(), grad_sample_mode='ghost',
        **kwargs)
  else:
    model, optimizer, _ = engine.make_private(grad_sample_mode='hooks',
                                              **kwargs)
    criterion = torch.nn.CrossEntropyLoss()

  def run():
    optimizer.zero_grad()
    loss = criterion(model(x), y)
    loss.backward()
    optimizer.step()

  return run

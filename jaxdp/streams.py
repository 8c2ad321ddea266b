"""Every random stream of jaxdp, and the keys and seeds derived from them.

A run has one seed (or, under `dp.secure_noise`, a 128-bit secret one). Each
use of randomness draws from its own stream, `(seed, STREAM, ...)`, so that
no two uses share draws: two equal constants would correlate, say, the
noise with the batch it is added to. `tests/test_streams.py` checks that the
values below all differ. Their values are part of every run's identity: a
changed value changes every draw, so they never change.
"""

import secrets

import jax
import numpy as np

# On the device (JAX keys).
NOISE_STREAM = 0x401E  # Gaussian noise on the clipped sum (the noise links).
INIT_STREAM = 0x1417  # Parameter initialisation.
AUGMENT_STREAM = 0xA061  # Random crops and flips of augmentation multiplicity.
COUNT_STREAM = 0xC0C0  # Adaptive clipping's noisy unclipped count, per step.
# On the host (NumPy generators).
SAMPLER_STREAM = 0x5A3D  # Which examples a step's batch holds.
CYCLE_STREAM = 0xC7C1  # Cyclic sampling's fixed groups of examples.
PCA_STREAM = 0x9CA  # DP-PCA released before step 1.
NORM_STREAM = 0x4E0  # Released normalisation statistics.
SEARCH_STREAM = 0x5EA  # Candidates of a hyperparameter search.
TRIAL_STREAM = 0x7E1A  # Seeds of the search's trials.
SCORE_STREAM = 0x7A1  # Noise on a trial's released score.
CANARY_STREAM = 0xCA9A  # Audit canaries.
PRESENCE_STREAM = 0x9E5E  # Which canaries an audit run includes.

# Config seeds are below this; secure seeds (dp.secure_noise) are 128-bit
# values with the top bit set, far above it.
MAX_CONFIG_SEED = 2**31 - 1


def secure_seed() -> int:
  """128 bits from the operating system's entropy source (top bit set)."""
  return secrets.randbits(128) | (1 << 127)


def noise_key(seed: int) -> jax.Array:
  """The key of the noise stream of privacy seed `seed`."""
  if seed <= MAX_CONFIG_SEED:
    return jax.random.fold_in(jax.random.key(seed), NOISE_STREAM)
  # jax.random.key keeps only 32 bits of a Python int without x64, so a
  # secure seed fills the key's whole 64 bits of data through a SeedSequence.
  data = np.random.SeedSequence([seed, NOISE_STREAM]).generate_state(
      2, np.uint32)
  return jax.random.wrap_key_data(data, impl='threefry2x32')


def init_key(seed: int) -> jax.Array:
  """The key that initialises the parameters of config seed `seed`."""
  return jax.random.fold_in(jax.random.key(seed), INIT_STREAM)

"""Statistics of the training set released once, with noise, before training.

Two published recipes fit a preprocessing step on the private training set:

* **DP-PCA** (Abadi et al. 2016): project the images onto the top-k
  eigenvectors of their covariance. Each image x is scaled to unit L2 norm,
  so its term x xᵀ of A = Σ x xᵀ has Frobenius norm 1 and adding or removing
  one example moves the upper triangle of A (diagonal included) by at most 1
  in L2 (its squared norm is (1 + Σ xᵢ⁴) / 2 ≤ 1). Gaussian noise
  N(0, σ_p²) on each of those entries, mirrored to the lower triangle, is
  therefore a Gaussian mechanism of noise multiplier σ_p:
  one `GaussianDpEvent(σ_p)`. The projection is the top-k eigenvectors of the
  noisy A (post-processing), applied to the raw flattened images.
* **Private normalisation** (Tramèr & Boneh 2021): standardise every channel
  with a mean and variance released with noise. Per example, the vector of
  its channel means over positions is clipped to L2 norm τ; the clipped
  vectors are summed, N(0, σ²τ²) is added and the sum divided by N (taken
  as public, as q = B/N is for the sampler).
  The same for the channel means of x², clipped to τ² (second moments scale
  as the square of the values). Two `GaussianDpEvent(σ)`. Unlike the
  paper's code, τ is a fixed setting (`dp.normalization_clip`), not the
  median of the private norms computed inside the mechanism, which leaks.
  Like any hyperparameter, a τ chosen by looking at the private data is a
  choice the guarantee does not account for.

Both releases use the whole training set (no sampling) and are defined for
add/remove-one neighbours. Their events are spent once, before step 1, and
composed with the training steps by the mechanism, the budget and the ledger.
The noise comes from the run's privacy seed (its own stream), so a resumed
run recomputes the same release rather than making a new one. It is drawn
with NumPy on the host, in float64 (the same floating-point caveat as the
training noise applies).
"""

import dataclasses
import types
from typing import Optional

import dp_accounting
import numpy as np

from jaxdp import streams
from jaxdp.accounting import history as event_history
from jaxdp.data.dataset import Dataset
from jaxdp.errors import ConfigError

# Added to released variances before the square root, as in the paper.
_VARIANCE_FLOOR = 1e-5

# The `config.dp` release fields of a run without releases (for dp configs
# built by hand rather than from configs/base.py).
NO_RELEASES = {'pca_components': 0, 'pca_noise_multiplier': 0.0,
               'normalization_noise_multiplier': 0.0,
               'normalization_clip': 1.0}


def _rng(seed: int, stream: int) -> np.random.Generator:
  return np.random.default_rng(np.random.SeedSequence([seed, stream]))


def check_fields(dp, sampler_relation: str) -> None:
  """Raises ConfigError for release settings that make no sense."""
  if dp.pca_components < 0:
    raise ConfigError('dp.pca_components', f'must be ≥ 0, got '
                      f'{dp.pca_components}', 'use 0 (no PCA) or e.g. 60')
  if dp.pca_components and not dp.pca_noise_multiplier > 0:
    raise ConfigError('dp.pca_noise_multiplier', f'must be > 0 with PCA, got '
                      f'{dp.pca_noise_multiplier}',
                      'set the noise of the covariance release, e.g. 7')
  if dp.normalization_noise_multiplier < 0:
    raise ConfigError('dp.normalization_noise_multiplier', 'must be ≥ 0, got '
                      f'{dp.normalization_noise_multiplier}',
                      'use 0 (no released normalisation) or e.g. 8')
  if dp.normalization_noise_multiplier and not dp.normalization_clip > 0:
    raise ConfigError('dp.normalization_clip', f'must be > 0, got '
                      f'{dp.normalization_clip}',
                      'set the L2 bound of each example\'s channel means')
  if (dp.pca_components or dp.normalization_noise_multiplier) and (
      sampler_relation != 'add_or_remove_one'):
    raise ConfigError('dp.sampler', 'releases before training are accounted '
                      'for add/remove-one neighbours only',
                      'use dp.sampler=poisson with PCA or released '
                      'normalisation')


# Returned by `setup_event_json` for settings written before releases existed.
UNKNOWN = object()


def setup_event_json(settings: dict):
  """The JSON of the release a run's privacy settings ask for (or UNKNOWN)."""
  if not all(key in settings for key in NO_RELEASES):
    return UNKNOWN
  event = setup_event(types.SimpleNamespace(
      **{key: settings[key] for key in NO_RELEASES}))
  return None if event is None else event_history.event_to_json(event)


def setup_event(dp) -> Optional[dp_accounting.DpEvent]:
  """The DpEvent of every release `dp` asks for (None: no release)."""
  events = []
  if dp.pca_components:
    events.append(dp_accounting.GaussianDpEvent(dp.pca_noise_multiplier))
  if dp.normalization_noise_multiplier:
    events.append(dp_accounting.SelfComposedDpEvent(
        dp_accounting.GaussianDpEvent(dp.normalization_noise_multiplier), 2))
  if not events:
    return None
  return events[0] if len(events) == 1 else dp_accounting.ComposedDpEvent(
      events)


def private_pca(images: np.ndarray, components: int, sigma: float,
                rng: np.random.Generator) -> np.ndarray:
  """[d, k] projection from the noisy covariance of unit-norm rows."""
  x = images.reshape(len(images), -1).astype(np.float64)
  norms = np.linalg.norm(x, axis=1, keepdims=True)
  x = x / np.maximum(norms, 1e-12)  # An all-zero image contributes zero.
  cov = x.T @ x
  noise = np.triu(rng.normal(0.0, sigma, cov.shape))
  cov = cov + noise + np.triu(noise, 1).T
  if components > cov.shape[0]:
    raise ConfigError('dp.pca_components', f'{components} > the {cov.shape[0]} '
                      'input dimensions', f'use at most {cov.shape[0]}')
  _, vectors = np.linalg.eigh(cov)  # Ascending eigenvalues.
  top = vectors[:, ::-1][:, :components]
  # An eigenvector's sign is arbitrary (it may differ between LAPACK builds):
  # make each one's largest entry positive, so a resume gets the same basis.
  largest = top[np.argmax(np.abs(top), axis=0), np.arange(components)]
  return (top * np.where(largest < 0, -1.0, 1.0)).astype(np.float32)


def private_channel_stats(images: np.ndarray, clip: float, sigma: float,
                          rng: np.random.Generator):
  """Noisy per-channel (mean, variance) of [n, H, W, C] images."""
  n = len(images)
  def noisy_mean(per_example, bound):  # [n, C] -> released mean [C].
    norms = np.linalg.norm(per_example, axis=1, keepdims=True)
    clipped = per_example * np.minimum(1.0, bound / np.maximum(norms, 1e-12))
    total = clipped.sum(0) + rng.normal(0.0, sigma * bound, clipped.shape[1])
    return total / n
  x = images.astype(np.float64)
  mean = noisy_mean(x.mean(axis=(1, 2)), clip)
  second = noisy_mean((x * x).mean(axis=(1, 2)), clip * clip)
  return mean, np.maximum(second - mean * mean, 0.0)


def apply(dp, dataset: Dataset, seed: int) -> Dataset:
  """`dataset` after the releases `dp` asks for (unchanged if none).

  Normalisation, if asked, comes first, then PCA (a run asks for one or the
  other in the published recipes).
  """
  if dp.normalization_noise_multiplier:
    mean, variance = private_channel_stats(
        dataset.train_images, dp.normalization_clip,
        dp.normalization_noise_multiplier, _rng(seed, streams.NORM_STREAM))
    # A channel whose released variance is 0 carries no usable signal.
    scale = np.where(variance > 0, 1.0 / np.sqrt(variance + _VARIANCE_FLOOR),
                     0.0).astype(np.float32)
    norm = lambda x: ((x - mean.astype(np.float32)) * scale).astype(np.float32)
    dataset = dataclasses.replace(
        dataset, source=f'{dataset.source}, privately standardised',
        train_images=norm(dataset.train_images),
        test_images=norm(dataset.test_images))
  if dp.pca_components:
    projection = private_pca(dataset.train_images, dp.pca_components,
                             dp.pca_noise_multiplier, _rng(seed, streams.PCA_STREAM))
    project = lambda x: (x.reshape(len(x), -1) @ projection).reshape(
        len(x), 1, 1, -1)
    dataset = dataclasses.replace(
        dataset, source=f'{dataset.source}, DP-PCA to {dp.pca_components}',
        train_images=project(dataset.train_images),
        test_images=project(dataset.test_images))
  return dataset

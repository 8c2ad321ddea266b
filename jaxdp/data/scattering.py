"""The 2D scattering transform (Mallat 2012; Bruna & Mallat 2013) in JAX.

Tramèr & Boneh 2021 ("Differentially Private Learning Needs Better Features
(or Much More Data)", ICLR) train DP models on scattering coefficients of the
images instead of pixels. The transform is fixed (nothing is learned from the
data), computed for each image on its own, so it costs no privacy: it is a
feature map applied to every example before training.

For J scales and L orientations, with Morlet wavelets ψ_{j,l} and a Gaussian
low-pass φ_J, an image x gives, on a grid 2^J times coarser:

    order 0:  x ⋆ φ_J                                   1 channel
    order 1:  |x ⋆ ψ_{j1,l1}| ⋆ φ_J                     J·L channels
    order 2:  ||x ⋆ ψ_{j1,l1}| ⋆ ψ_{j2,l2}| ⋆ φ_J, j2 > j1   L²·J(J−1)/2

J = 2, L = 8 (the paper's setting) gives 81 channels per input channel:
[n, 28, 28, 1] -> [n, 7, 7, 81] for MNIST, [n, 32, 32, 3] -> [n, 8, 8, 243]
for CIFAR-10. Wavelet parameters are the standard ones: scale σ = 0.8·2^j,
centre frequency ξ = 3π/4·2^−j, orientation θ = lπ/L, slant 4/L (ellipticity
of the envelope); φ_J is an isotropic Gaussian of σ = 0.8·2^J.

Here every convolution is a product in the Fourier domain at full resolution
(no subsampling between orders), on the image reflect-padded by 2^J pixels on
each side; the output is the low-passed maps sampled every 2^J pixels with the
padded border dropped. Kymatio, which the paper used, subsamples between
orders for speed, so its coefficients differ from these by that aliasing;
kymatio 0.3.0 (its last release) no longer imports with current SciPy.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

# Images per batch when a whole dataset is transformed (bounds memory).
_CHUNK = 256


def _gabor(size: tuple[int, int], sigma: float, theta: float, xi: float,
           slant: float) -> np.ndarray:
  """A Gabor filter centred on pixel (0, 0), periodised over `size`."""
  rows, cols = size
  rotation = np.array([[math.cos(theta), -math.sin(theta)],
                       [math.sin(theta), math.cos(theta)]])
  # Inverse covariance of the envelope: σ along θ, σ/slant across it.
  inv_cov = rotation @ np.diag([1.0, slant**2]) @ rotation.T / (2 * sigma**2)
  out = np.zeros(size, np.complex128)
  # Summing shifted copies periodises the filter, so FFT convolution is exact.
  for dr in (-2, -1, 0, 1, 2):
    for dc in (-2, -1, 0, 1, 2):
      r, c = np.meshgrid(np.arange(rows) + dr * rows,
                         np.arange(cols) + dc * cols, indexing='ij')
      quad = (inv_cov[0, 0] * r * r + 2 * inv_cov[0, 1] * r * c +
              inv_cov[1, 1] * c * c)
      phase = xi * (r * math.cos(theta) + c * math.sin(theta))
      out += np.exp(-quad + 1j * phase)
  return out * slant / (2 * math.pi * sigma**2)


def _morlet(size, sigma, theta, xi, slant) -> np.ndarray:
  """A Gabor minus a multiple of its envelope, so that its mean is zero."""
  wave = _gabor(size, sigma, theta, xi, slant)
  envelope = _gabor(size, sigma, theta, 0.0, slant)
  return wave - envelope * (wave.sum() / envelope.sum())


@functools.lru_cache(maxsize=None)
def filter_bank(size: tuple[int, int], num_scales: int,
                num_angles: int) -> tuple[np.ndarray, np.ndarray]:
  """Fourier transforms of ψ_{j,l} [J, L, H, W] and of φ_J [H, W]."""
  psi = np.stack([
      np.stack([np.fft.fft2(_morlet(size, 0.8 * 2**j, l * math.pi / num_angles,
                                    0.75 * math.pi / 2**j, 4.0 / num_angles))
                for l in range(num_angles)]) for j in range(num_scales)])
  phi = np.fft.fft2(_gabor(size, 0.8 * 2**num_scales, 0.0, 0.0, 1.0))
  return psi.astype(np.complex64), phi.astype(np.complex64)


def num_channels(num_scales: int, num_angles: int) -> int:
  """Output channels per input channel: 1 + JL + L²J(J−1)/2."""
  return (1 + num_scales * num_angles +
          num_angles**2 * num_scales * (num_scales - 1) // 2)


@functools.partial(jax.jit, static_argnums=(1, 2))
def scattering(images: jax.Array, num_scales: int = 2,
               num_angles: int = 8) -> jax.Array:
  """Scattering coefficients of images [n, H, W, C] -> [n, H/2^J, W/2^J, K·C].

  H and W must be multiples of 2^J. Channels are ordered input channel-major:
  for each input channel, order 0, then order 1 by (j1, l1), then order 2 by
  (j1, l1, j2, l2).
  """
  n, height, width, channels = images.shape
  step = 2**num_scales
  if height % step or width % step:
    raise ValueError(f'image size {height}x{width} is not a multiple of '
                     f'2^J = {step}')
  x = jnp.moveaxis(images, -1, 1).reshape(n * channels, height, width)
  x = jnp.pad(x, ((0, 0), (step, step), (step, step)), mode='reflect')
  psi, phi = filter_bank(x.shape[1:], num_scales, num_angles)
  psi, phi = jnp.asarray(psi), jnp.asarray(phi)

  def low_pass(maps_hat):  # [..., P, Q] Fourier -> sampled, border dropped.
    maps = jnp.real(jnp.fft.ifft2(maps_hat * phi))
    return maps[..., ::step, ::step][..., 1:-1, 1:-1]

  x_hat = jnp.fft.fft2(x)
  outputs = [low_pass(x_hat)[:, None]]
  # |x ⋆ ψ_{j1,l1}| for every j1, l1: [m, J, L, P, Q], in Fourier.
  first = jnp.fft.fft2(jnp.abs(jnp.fft.ifft2(x_hat[:, None, None] * psi)))
  outputs.append(low_pass(first).reshape(n * channels, -1,
                                         *outputs[0].shape[-2:]))
  for j1 in range(num_scales):
    for j2 in range(j1 + 1, num_scales):
      # [m, L(l1), 1, P, Q] × [L(l2), P, Q] -> [m, L, L, P, Q].
      second = jnp.abs(jnp.fft.ifft2(first[:, j1, :, None] * psi[j2]))
      coeffs = low_pass(jnp.fft.fft2(second))
      outputs.append(coeffs.reshape(n * channels, -1, *coeffs.shape[-2:]))
  out = jnp.concatenate(outputs, axis=1)  # [n·C, K, h, w]
  out = out.reshape(n, channels * out.shape[1], *out.shape[-2:])
  return jnp.moveaxis(out, 1, -1).astype(images.dtype)


def scatter_dataset(images: np.ndarray, num_scales: int = 2,
                    num_angles: int = 8) -> np.ndarray:
  """`scattering` over a whole split, in chunks, as a NumPy array."""
  out = []
  for start in range(0, len(images), _CHUNK):
    chunk = images[start:start + _CHUNK]
    # Pad the last chunk to the full size so the transform compiles once.
    padded = np.zeros((_CHUNK, *images.shape[1:]), images.dtype)
    padded[:len(chunk)] = chunk
    out.append(np.asarray(scattering(padded, num_scales,
                                     num_angles))[:len(chunk)])
  return np.concatenate(out) if out else np.zeros(
      (0, images.shape[1] // 2**num_scales, images.shape[2] // 2**num_scales,
       images.shape[3] * num_channels(num_scales, num_angles)), np.float32)

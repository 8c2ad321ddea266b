"""jaxdp: differentially private training and fine-tuning in JAX/Flax."""

import pathlib

import setuptools

_HERE = pathlib.Path(__file__).parent


def _requirements():
  lines = (_HERE / 'requirements.txt').read_text().splitlines()
  return [line.strip() for line in lines
          if line.strip() and not line.startswith('#')]


setuptools.setup(
    name='jaxdp',
    version='0.1.0',
    description='Differentially private training and fine-tuning in JAX/Flax',
    long_description=(_HERE / 'README.md').read_text(encoding='utf-8'),
    long_description_content_type='text/markdown',
    python_requires='>=3.11',
    packages=setuptools.find_packages(include=['jaxdp', 'jaxdp.*']),
    install_requires=_requirements(),
    extras_require={
        # Two workers: the suite's time is mostly XLA compiling, one core each.
        'test': ['pytest==9.0.3', 'pytest-xdist==3.8.0'],
        # Side-by-side rows in experiments.benchmark. On a CPU-only machine,
        # install PyTorch's CPU build first: the default wheel is CUDA.
        'compare': ['jax-privacy==2.0.0', 'opacus==1.6.0', 'torch==2.13.0'],
    },
    license='Apache-2.0',
)

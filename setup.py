"""lattice: composable LLM techniques in JAX/Flax, each backed by paper reproductions."""

from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent


def requirements():
  lines = (ROOT / 'requirements.txt').read_text().splitlines()
  return [l.strip() for l in lines if l.strip() and not l.startswith('#')]


setup(
    name='lattice',
    version='0.1.0',
    description='Composable LLM techniques in JAX/Flax with paper reproductions.',
    long_description=(ROOT / 'README.md').read_text(),
    long_description_content_type='text/markdown',
    python_requires='>=3.10',
    packages=find_packages(include=['lattice', 'lattice.*', 'kernels', 'kernels.*',
                                    'experiments', 'experiments.*', 'benchmarks',
                                    'benchmarks.*']),
    install_requires=requirements(),
    extras_require={
        # openai/httpx: the server tests drive it with the official SDK.
        # torch/transformers/safetensors: the convert tests build tiny HF models
        # (on these machines `pip install torch==2.13.0` is a local CPU wheel).
        'test': ['pytest>=8.0', 'chex>=0.1.90', 'openai>=1.40', 'httpx>=0.27',
                 'torch==2.13.0', 'transformers>=5.24.0', 'safetensors>=0.8.0'],
        'tensorboard': ['tensorboardX>=2.6'],
        # datasets for data.source=hf; safetensors to import/export HF checkpoints
        # (lattice convert); transformers only to load exported models back.
        'hf': ['datasets>=2.19', 'safetensors>=0.8.0'],
    },
    entry_points={'console_scripts': ['lattice=lattice.cli:main']},
)

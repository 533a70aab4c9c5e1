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
        'test': ['pytest>=8.0', 'chex>=0.1.90', 'datasets>=2.19', 'lm_eval>=0.4.9'],
        'eval': ['lm_eval>=0.4.9'],
        'tensorboard': ['tensorboardX>=2.6'],
        'hf': ['datasets>=2.19'],
    },
    entry_points={'console_scripts': ['lattice=lattice.cli:main']},
)

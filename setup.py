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
        # jsonschema + its format-checker extras: the reference validator of the
        # constrained-decoding tests.
        'test': ['pytest>=8.0', 'chex>=0.1.90', 'jsonschema[format-nongpl]>=4.20'],
        # Other constrained-decoding engines, compared by benchmarks.constrained_decode.
        'bench': ['llguidance>=1.0', 'xgrammar>=0.2.9', 'outlines-core>=0.2.14'],
        'tensorboard': ['tensorboardX>=2.6'],
        'hf': ['datasets>=2.19'],
    },
    entry_points={'console_scripts': ['lattice=lattice.cli:main']},
)

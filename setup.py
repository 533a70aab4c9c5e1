"""lattice: composable LLM techniques in JAX/Flax, each backed by paper reproductions."""

import importlib.util
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).parent


def requirements():
  lines = (ROOT / 'requirements.txt').read_text().splitlines()
  return [l.strip() for l in lines if l.strip() and not l.startswith('#')]


class BuildFfiExt(build_ext):
  """Adds the XLA FFI headers that jaxlib ships (jaxlib/include) to every extension.

  jaxlib is found without importing jax; pyproject.toml lists it as a build
  requirement so pip's isolated build environment has it. The extension is optional:
  if it cannot be built, lattice installs without it and the XLA path is used.
  """

  def build_extensions(self):
    spec = importlib.util.find_spec('jaxlib')
    if spec is not None and spec.submodule_search_locations:
      include = Path(list(spec.submodule_search_locations)[0]) / 'include'
      for ext in self.extensions:
        ext.include_dirs.append(str(include))
    super().build_extensions()


# The native CPU ternary matmul (kernels/ternary_cpu): no -march flags, so the library
# runs on any x86-64; AVX2 / AVX-512 code is chosen at run time from CPUID.
# -ffp-contract=off: no FMA in the final scaling, to match XLA's result bit for bit.
TERNARY_CPU = Extension(
    'kernels.ternary_cpu._ternary_cpu',
    sources=['kernels/ternary_cpu/ternary_cpu.cc'],
    depends=['kernels/column_chunks.h'],
    language='c++',
    extra_compile_args=['-std=c++17', '-O3', '-ffp-contract=off', '-w'],
    optional=True,
)

# The native CPU grouped matmul of dropless MoE (kernels/grouped_matmul/grouped_cpu.cc):
# one OpenBLAS sgemm per expert, the fused SwiGLU experts of a MoE layer (moe_cpu.cc) and
# the token gather / combine around them (permute_cpu.cc); the fused MoE kernel's own
# AVX-512 / AVX2 products (small_gemm.h, chosen at run time by what the CPU runs);
# it links no BLAS (Python hands it scipy-openblas32's
# sgemm at load time), so it builds with the FFI headers alone.
GROUPED_CPU = Extension(
    'kernels.grouped_matmul._grouped_cpu',
    sources=['kernels/grouped_matmul/grouped_cpu.cc', 'kernels/grouped_matmul/moe_cpu.cc',
             'kernels/grouped_matmul/permute_cpu.cc'],
    depends=['kernels/grouped_matmul/grouped_cpu.h', 'kernels/grouped_matmul/small_gemm.h',
             'kernels/grouped_matmul/small_gemm_impl.inc'],
    language='c++',
    extra_compile_args=['-std=c++17', '-O3', '-w'],
    optional=True,
)

# The native CPU skinny float32 matmul and decode attention (kernels/skinny_cpu):
# decoding's 1..8-row projections and cache attention; explicit fused multiply-adds,
# so no contraction flags are needed.
SKINNY_CPU = Extension(
    'kernels.skinny_cpu._skinny_cpu',
    sources=['kernels/skinny_cpu/skinny_cpu.cc', 'kernels/skinny_cpu/attention_cpu.cc'],
    depends=['kernels/column_chunks.h', 'kernels/skinny_cpu/isa.h'],
    language='c++',
    extra_compile_args=['-std=c++17', '-O3', '-ffp-contract=off', '-w'],
    optional=True,
)

# The native core of DFA post-processing for constrained decoding
# (lattice/decode/dfa_native.cc: trimming, Moore minimisation, renumbering), loaded
# with ctypes; lattice.decode.automaton uses numpy/scipy when it is not built.
# -O3 (was -O2): the schema compiler's native compose calls ran 3-5% faster
# (JSONSchemaBench's JsonSchemaStore, Github_hard and Github_ultra calls replayed
# through both builds alternately in one process, identical tables; integer code
# only, so the tables do not depend on the flag).
DFA_NATIVE = Extension(
    'lattice.decode._dfa_native',
    sources=['lattice/decode/dfa_native.cc'],
    language='c++',
    extra_compile_args=['-std=c++17', '-O3', '-w'],
    optional=True,
)

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
                 'torch==2.13.0', 'transformers>=5.24.0', 'safetensors>=0.8.0',
                 # datasets: HF streaming sources; lm_eval: the harness adapter.
                 'datasets>=2.19', 'lm_eval>=0.4.9',
                 # jsonschema + its format-checker extras: the reference validator
                 # of the constrained-decoding tests.
                 'jsonschema[format-nongpl]>=4.20',
                 # A local GCS emulator for the gs:// workdir tests (127.0.0.1 only).
                 'gcp-storage-emulator>=2026.7.19', 'gcsfs>=2026.10.1',
                 # Two test workers, one file each (pytest.ini: -n 2 --dist loadfile).
                 'pytest-xdist>=3.8',
                 # dropless_impl='tokamax' (XLA's ragged_dot inside it on CPU).
                 'tokamax>=0.0.12'],
        # dropless_impl='tokamax': the kernel library's grouped matmul (Mosaic / Triton
        # ragged_dot kernels on GPU and TPU).
        'kernels': ['tokamax>=0.0.12'],
        # --workdir=gs://...: etils.epath reads and writes GCS through gcsfs.
        'gcs': ['gcsfs>=2026.10.1'],
        'eval': ['lm_eval>=0.4.9'],
        # Other constrained-decoding engines, compared by benchmarks.constrained_decode.
        'bench': ['llguidance>=1.0', 'xgrammar>=0.2.9', 'outlines-core>=0.2.14'],
        'tensorboard': ['tensorboardX>=2.6'],
        # datasets for data.source=hf; safetensors to import/export HF checkpoints
        # (lattice convert); transformers only to load exported models back.
        'hf': ['datasets>=2.19', 'safetensors>=0.8.0'],
    },
    ext_modules=[TERNARY_CPU, GROUPED_CPU, SKINNY_CPU, DFA_NATIVE],
    cmdclass={'build_ext': BuildFfiExt},
    entry_points={'console_scripts': ['lattice=lattice.cli:main']},
)

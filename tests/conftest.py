"""Shared test setup: 8 simulated CPU devices (meshes), quiet logs, tiny configs."""

import os

# LLVM at -O1 for the tests' XLA:CPU programs: XLA's own HLO passes (fusion, layout,
# buffer assignment) still run, so memory analyses are those of a normal build, and
# the backend compile of a tiny program costs less CPU (CPU seconds measured on the
# loaded 2-core machine, MoE+MTP tiny config: init 7.7 -> 3.0, train step 9.2 -> 7.4),
# and compiling is most of the suite's time. Not -O0 (init 2.2, train step 5.5): its
# float results differ slightly from -O2's, enough that convert_bitnet_test's logits
# moved 0.015 from torch's (an activation rounding flipped; 1e-4 allowed).
# Subprocesses inherit it through the environment; a test that sets XLA_FLAGS itself
# adds XLA_TEST_FLAGS. An XLA_FLAGS that already names an optimization level is kept.
XLA_TEST_FLAGS = '--xla_backend_optimization_level=1'
if 'xla_backend_optimization_level' not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = f"{os.environ.get('XLA_FLAGS', '')} {XLA_TEST_FLAGS}".strip()
# Nothing in the tests may reach a hub: datasets, transformers and lm_eval read only
# the local files the tests write.
for _offline in ('HF_HUB_OFFLINE', 'HF_DATASETS_OFFLINE', 'TRANSFORMERS_OFFLINE'):
  os.environ.setdefault(_offline, '1')
import jax  # noqa: E402

# Must happen before any backend is initialised; every test then sees 8 CPU devices
# and picks a 1-device or 8-device mesh explicitly.
jax.config.update('jax_num_cpu_devices', 8)

# One persistent compilation cache for the whole session: many tests compile the same
# tiny models (same HLO, new jit objects), and XLA compiles are most of the suite's
# time on a 2-core CPU. A fresh folder per session, so nothing leaks between runs.
import atexit  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402

_CACHE_DIR = tempfile.mkdtemp(prefix='lattice-jax-cache-')
atexit.register(shutil.rmtree, _CACHE_DIR, ignore_errors=True)
jax.config.update('jax_compilation_cache_dir', _CACHE_DIR)
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)

import pytest  # noqa: E402
from absl import logging  # noqa: E402

logging.set_verbosity(logging.WARNING)


def tiny_config(**sections):
  """A ConfigDict-style dict for a ~30k-parameter model on short sequences."""
  base = {
      'model': {'d_model': 32, 'n_layers': 2, 'max_len': 64,
                'attention': {'n_heads': 4, 'n_kv_heads': 2}},
      'data': {'seq_len': 16, 'batch_size': 8, 'eval_batches': 2},
      'optimizer': {'lr': 3e-3, 'warmup_steps': 2},
      'train': {'steps': 6, 'log_every': 2, 'eval_every': 0, 'progress': False,
                'flops_peak': 1e9},
      'checkpoint': {'every': 3, 'keep': 3},
  }
  for name, values in sections.items():
    base.setdefault(name, {}).update(values)
  return base


@pytest.fixture
def one_device():
  return jax.devices()[:1]

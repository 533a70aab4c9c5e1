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

# One persistent compilation cache for the whole session, shared by the xdist workers
# and every subprocess a test starts: many tests compile the same tiny models (same
# HLO, new jit objects, other files, other processes), and XLA compiles are most of
# the suite's time on a 2-core CPU. The first process that imports this file (the
# xdist controller, or the only process under -n 0) makes a fresh folder and exports
# it through JAX's environment variables, so the workers and the tests' subprocesses
# (env={**os.environ, ...}) inherit it; it is removed when that process exits. No
# size bound: a bound turns on JAX's file lock but rescans the whole folder on every
# write. Without the lock, an entry another process is still writing reads as a
# truncated compressed stream, which JAX reports as a warning and compiles afresh
# (jax._src.compiler._cache_read). A test that needs its own cache sets these itself.
import atexit  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402

if not os.environ.get('LATTICE_TEST_JAX_CACHE'):
  _cache_dir = tempfile.mkdtemp(prefix='lattice-jax-cache-')
  atexit.register(shutil.rmtree, _cache_dir, ignore_errors=True)
  os.environ.update({
      'LATTICE_TEST_JAX_CACHE': _cache_dir,
      'JAX_COMPILATION_CACHE_DIR': _cache_dir,
      'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0',
      'JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES': '0',
  })
jax.config.update('jax_compilation_cache_dir', os.environ['LATTICE_TEST_JAX_CACHE'])
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)

import pytest  # noqa: E402
from absl import logging  # noqa: E402
import orbax.checkpoint as ocp  # noqa: E402

# Orbax saves a replicated array "replica-parallel" by default on CPU: each replica
# writes one slice (orbax _src/serialization/replica_slices.py), cut by an eager
# jax.lax.slice_in_dim. With the tests' 8 simulated devices in one process, every
# replicated leaf became 8 slices, each slice shape one more compiled program.
# Measured under load, smoke runs: baseline_lm dispatched 1,056 slices and compiled
# 63 programs instead of 15 (CPU 11.5 s -> 9.9 s); deepseek_moe 167 instead of 23
# (CPU 43.5 s -> 36.7 s). One host writes every byte either
# way, so here each array is saved from one replica, as Orbax does on GPU. Test
# subprocesses keep Orbax's default.
logging.set_verbosity(logging.ERROR)   # not Orbax's warning that it overrides one
ocp.type_handlers.register_type_handler(
    jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=False), override=True)

# The xdist workers take the longest test files first (tests/xdist_order.py).
import xdist_order  # noqa: E402

pytest_xdist_make_scheduler = xdist_order.pytest_xdist_make_scheduler

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

"""glibc malloc settings for lattice's training processes: `tune_malloc`.

XLA:CPU gives each execution of a compiled step its temporaries as one block (273 MB
for `train_throughput`'s d_model-128 step, 4 layers, 32 x 128 tokens; 309 MB for
baseline_lm's quick model of that size). That is above
glibc's mmap threshold (at most 32 MiB; and a pool thread's arena, whose heaps are at
most 64 MiB, maps any larger request itself), so every step maps the block, touches
the ~100 MB it uses page by page, and unmaps it: on the 2-core Xeon (3 Dec 2026, perf
of `benchmarks.train_throughput --sizes 128 --seq_len 128 --batch 32`, informal, idle)
3.2M page faults in a 40-step run and ~23% of the step's CPU time in the kernel.
With one arena, no mmap'd chunks and no trimming the block stays in the heap between
steps: 0.32-0.46M faults and 18.5-20.7K tokens/s against 15.5-16.1K (1.2-1.3x; two
alternating pairs each way); at d_model 256-512 (`train_throughput`'s default sizes)
tokens/s were unchanged (5,670 / 3,248 / 2,179 vs 5,784 / 3,237 / 2,172: those steps
are bound by their matmuls). Through `lattice run` on baseline_lm's quick model (150
steps, the same machine, informal): 12.2M -> 0.45M page faults, 0.267 -> 0.218 s a
step (1.23x). The cost: the process never returns freed memory to the system, so its
resident size stays at its peak (what a training run reaches anyway), and one arena
serialises the threads' mallocs (no slower in the runs above).

Applied by `lattice run` / `python -m lattice.main` before anything starts threads;
LATTICE_MALLOC=0 keeps glibc's defaults. Benchmarks do not apply it (their measured
ratios were recorded under the defaults).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

# mallopt parameters (glibc's malloc.h).
M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8
_INT_MAX = 2**31 - 1


def tune_malloc() -> bool:
  """One malloc arena, no mmap'd chunks, no heap trimming (module doc: why, measured).

  Call before a second thread allocates: glibc fixes its arena limit then (importing
  lattice.config already starts grain's native threads), and a pool thread's own arena
  maps a large block whatever M_MMAP_MAX says.
  Returns True when glibc accepted all three settings; False off glibc, when
  LATTICE_MALLOC=0, or when a setting was refused (then glibc's defaults stand for it).
  """
  if os.environ.get('LATTICE_MALLOC', '1') == '0':
    return False
  name = ctypes.util.find_library('c')
  try:
    libc = ctypes.CDLL(name or 'libc.so.6')
    mallopt = libc.mallopt
  except (OSError, AttributeError):
    return False  # not glibc (musl, macOS): nothing to set
  mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
  return all(mallopt(param, value) == 1 for param, value in (
      (M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, _INT_MAX)))

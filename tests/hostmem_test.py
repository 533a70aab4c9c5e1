"""lattice.hostmem: the malloc settings keep a large freed block in the heap."""

import ctypes.util
import os
import subprocess
import sys

import pytest

from lattice import hostmem

GLIBC = ctypes.util.find_library('c') is not None and sys.platform.startswith('linux')

# A pool thread mallocs, touches and frees a 256 MiB block 5 times (XLA's per-step
# temporaries, in small); prints the minor page faults of the last 4 rounds.
_PROBE = r'''
import ctypes, resource, sys, threading
from lattice import hostmem
tuned = hostmem.tune_malloc() if sys.argv[1] == '1' else False
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
size, faults = 256 << 20, []
def work():
  for i in range(5):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    p = libc.malloc(size)
    ctypes.memset(p, 1, size)
    libc.free(p)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
t = threading.Thread(target=work)
t.start(); t.join()
print(int(tuned), sum(faults[1:]))
'''


def _thp_always() -> bool:
  try:
    with open('/sys/kernel/mm/transparent_hugepage/enabled') as f:
      return '[always]' in f.read()
  except OSError:
    return False


def _probe(tune: str) -> tuple[int, int]:
  out = subprocess.run([sys.executable, '-c', _PROBE, tune], capture_output=True, text=True,
                       check=True, env={**os.environ, 'LATTICE_MALLOC': '1'})
  tuned, faults = out.stdout.split()
  return int(tuned), int(faults)


@pytest.mark.skipif(not GLIBC, reason='glibc only')
def test_tuned_malloc_reuses_a_freed_block_without_new_page_faults():
  tuned, faults = _probe('1')
  assert tuned == 1
  pages = 4 * (256 << 20) // 4096  # what 4 rounds touch
  assert faults < pages // 20, faults  # the block stays mapped after the first round
  untuned, base_faults = _probe('0')
  assert untuned == 0
  if not _thp_always():  # (with always-on huge pages a fresh mapping faults 2 MiB at a time)
    assert base_faults > pages // 2, base_faults  # glibc's default: mapped anew each round


def test_lattice_malloc_0_leaves_the_defaults(monkeypatch):
  monkeypatch.setenv('LATTICE_MALLOC', '0')
  assert hostmem.tune_malloc() is False

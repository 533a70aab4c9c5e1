"""The machine a benchmark ran on, for its JSON record and its first printed line.

Ratios in BENCHMARKS.md moved with the machine as well as with the code: on an
AVX2-only Zen 1 EPYC two of #18's CPU goals that an AVX-512 EPYC had met did not hold
(speculative decoding 1.28x, dropless MoE 2.35-2.59x), and an AVX-512 Xeon gave other
figures again (BENCHMARKS.md, tenth and eleventh sessions). So these benchmarks record
what they ran on:

  {"cpu": "Intel(R) Xeon(R) Processor", "cores": 2, "isa": ["avx2", "avx512f", ...],
   "l2_kib": 2048, "l3_kib": 491520, "load_average_start": 0.4, "load_average_end": ...}

read from /proc/cpuinfo, the affinity mask and /sys/devices/system/cpu (Linux; fields
that cannot be read are None), plus the 1-minute load average when `describe` was
called and, through `finish`, at the end (BENCHMARKS.md records both next to each
figure). Nothing here starts a process or touches the network.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

# The instruction-set flags the native kernels choose between (kernels/skinny_cpu/isa.h,
# kernels/ternary_cpu, OpenBLAS's core type), in /proc/cpuinfo's spelling.
_ISA_FLAGS = ('avx2', 'fma', 'avx512f', 'avx512bw', 'avx512vl', 'avx512_vnni', 'avx512_bf16',
              'avx512_fp16', 'amx_tile', 'amx_bf16', 'amx_int8', 'asimd', 'sve')


def _cpuinfo() -> dict[str, str]:
  """The first processor's fields of /proc/cpuinfo ({} where it cannot be read)."""
  try:
    text = Path('/proc/cpuinfo').read_text()
  except OSError:
    return {}
  out = {}
  for line in text.split('\n\n', 1)[0].splitlines():
    key, sep, value = line.partition(':')
    if sep:
      out[key.strip()] = value.strip()
  return out


def _cache_kib(level: int) -> int | None:
  """cpu0's unified or data cache size at `level` in KiB, as sysfs reports it (a VM may
  report its host's; None where absent)."""
  root = Path('/sys/devices/system/cpu/cpu0/cache')
  try:
    for index in sorted(root.glob('index*')):
      if (int((index / 'level').read_text()) == level
          and (index / 'type').read_text().strip() in ('Unified', 'Data')):
        size = (index / 'size').read_text().strip()
        scale = {'K': 1, 'M': 1024, 'G': 1024 * 1024}.get(size[-1:], None)
        return int(size[:-1]) * scale if scale else int(size) // 1024
  except (OSError, ValueError):
    return None
  return None


def _load() -> float | None:
  try:
    return round(os.getloadavg()[0], 2)
  except OSError:
    return None


def describe() -> dict[str, Any]:
  """The machine now: cpu (model name), vendor, family/model (as reported; a VM may
  report other numbers than the host's), cores (CPUs this process may run on), isa
  (which of the kernels' instruction-set flags are present), l2_kib / l3_kib, and
  load_average_start (1-minute). Never raises; unknown fields are None."""
  info = _cpuinfo()
  flags = set(info.get('flags', info.get('Features', '')).split())
  try:
    cores = len(os.sched_getaffinity(0))
  except (AttributeError, OSError):
    cores = os.cpu_count()
  return {'cpu': info.get('model name'), 'vendor': info.get('vendor_id'),
          'family_model': (f'{info["cpu family"]}/{info["model"]}'
                           if 'cpu family' in info and 'model' in info else None),
          'cores': cores, 'isa': [f for f in _ISA_FLAGS if f in flags],
          'l2_kib': _cache_kib(2), 'l3_kib': _cache_kib(3),
          'load_average_start': _load()}


def finish(machine: dict[str, Any]) -> dict[str, Any]:
  """`machine` with load_average_end (1-minute, now) added; returns it."""
  machine['load_average_end'] = _load()
  return machine


def line(machine: dict[str, Any]) -> str:
  """One printed line: 'machine: <cpu>, <cores> cores, <isa>, L2 <n> KiB, L3 <n> KiB,
  load <x>'."""
  isa = '+'.join(machine['isa']) or 'no listed ISA flags'
  caches = ', '.join(f'{k[:2].upper()} {machine[k]} KiB' for k in ('l2_kib', 'l3_kib')
                     if machine.get(k) is not None)
  return (f'machine: {machine["cpu"] or "unknown cpu"}, {machine["cores"]} cores, {isa}'
          + (f', {caches}' if caches else '')
          + (f', load {machine["load_average_start"]:.2f}'
             if machine.get('load_average_start') is not None else ''))

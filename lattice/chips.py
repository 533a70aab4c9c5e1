"""Published per-chip peaks: what MFU is measured against and what `lattice plan` sizes.

Dense bf16 matmul peaks (no structured sparsity), HBM capacity and bandwidth, from
the vendors' data sheets: NVIDIA A100 (SXM4 80GB), H100 (SXM5), H200 (SXM), B200
(HGX) data sheets; Google Cloud TPU system architecture pages for v4, v5e, v5p and
v6e (Trillium). A CPU has no published peak: MFU there is against a matmul timed at
start (`lattice.train.flops.measure_matmul_peak`).
"""

from __future__ import annotations

import dataclasses
import re


@dataclasses.dataclass(frozen=True)
class Chip:
  name: str
  bf16_flops: float      # dense bf16 FLOP/s per chip
  hbm_bytes: float       # memory per chip
  hbm_bytes_per_s: float
  # Substrings of `jax.Device.device_kind` that identify the chip (lower case).
  kinds: tuple[str, ...]


CHIPS: dict[str, Chip] = {c.name: c for c in (
    Chip('a100', 312e12, 80e9, 2.039e12, ('a100',)),
    Chip('h100', 989e12, 80e9, 3.35e12, ('h100',)),
    Chip('h200', 989e12, 141e9, 4.8e12, ('h200',)),
    Chip('b200', 2250e12, 180e9, 8.0e12, ('b200',)),
    Chip('v4', 275e12, 32 * 2**30, 1.2e12, ('tpu v4',)),
    Chip('v5e', 197e12, 16 * 2**30, 0.819e12, ('tpu v5 lite', 'tpu v5e')),
    Chip('v5p', 459e12, 95 * 2**30, 2.765e12, ('tpu v5p', 'tpu v5')),
    Chip('v6e', 918e12, 32 * 2**30, 1.64e12, ('tpu v6 lite', 'tpu v6e', 'tpu v6')),
)}


def for_device_kind(device_kind: str) -> Chip | None:
  """The chip a `jax.Device.device_kind` string names, or None (a CPU, an unknown GPU)."""
  kind = device_kind.lower()
  for chip in CHIPS.values():     # v5p is listed before its 'tpu v5' prefix match
    if any(k in kind for k in chip.kinds):
      return chip
  return None


def parse_slice(spec: str) -> tuple[Chip, int]:
  """`v5e-64`, `h100x8`, `h200` -> (chip, number of chips).

  Raises:
    ValueError: an unknown chip or count, naming `--chips` and the known chips.
  """
  m = re.fullmatch(r'([a-z0-9]+?)(?:[-x](\d+))?', spec.strip().lower())
  if not m or m.group(1) not in CHIPS:
    raise ValueError(f'--chips: {spec!r} is not CHIP[-N|xN] with CHIP one of '
                     f'{", ".join(CHIPS)} (e.g. v5e-64, h100x8)')
  count = int(m.group(2) or 1)
  if count < 1:
    raise ValueError(f'--chips: {spec!r} needs at least one chip')
  return CHIPS[m.group(1)], count

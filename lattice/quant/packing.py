"""Bit packing for export and low-bit kernels: ternary at 2 bits (4 a byte, like
bitnet.cpp's I2_S), ternary in base 3 (5 a byte, 3^5 = 243 <= 256: 1.6 bits), and
signs at 1 bit (8 a byte).

Every packer flattens, pads to a whole byte (ternary with 0, signs with +1) and returns
a `Packed(data uint8[n_bytes], shape)`; its unpacker drops the padding and restores
the shape, so round trips are exact for any shape. Host-side numpy (export, kernel
references); accepts jax arrays too.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

_POW3 = np.array([1, 3, 9, 27, 81], np.uint8)


class Packed(NamedTuple):
  data: np.ndarray            # uint8[n_bytes]
  shape: tuple[int, ...]      # the unpacked array's shape


def _groups(x, per_byte: int, fill: int, allowed: tuple[int, ...]
            ) -> tuple[np.ndarray, tuple[int, ...]]:
  x = np.asarray(x)
  if x.size and not np.isin(x, allowed).all():
    raise ValueError(f'packing: values must be in {allowed}, got '
                     f'{np.unique(x)[~np.isin(np.unique(x), allowed)][:5]}')
  flat = x.reshape(-1).astype(np.int16)
  flat = np.pad(flat, (0, -flat.size % per_byte), constant_values=fill)
  return flat.reshape(-1, per_byte), tuple(x.shape)


def _restore(digits: np.ndarray, p: Packed, offset: int) -> np.ndarray:
  n = int(np.prod(p.shape, dtype=np.int64))
  return (digits.reshape(-1)[:n].astype(np.int8) - offset).reshape(p.shape)


def pack_ternary_2bit(codes) -> Packed:
  """Codes in {-1, 0, 1} -> ceil(n/4) bytes; element i of a group in bits 2i..2i+1."""
  g, shape = _groups(codes, 4, 0, (-1, 0, 1))
  digits = (g + 1).astype(np.uint8)  # {-1, 0, 1} -> {0, 1, 2}
  shifts = np.arange(4, dtype=np.uint8) * 2
  return Packed(np.bitwise_or.reduce(digits << shifts, axis=1), shape)


def unpack_ternary_2bit(p: Packed) -> np.ndarray:
  shifts = np.arange(4, dtype=np.uint8) * 2
  return _restore((np.asarray(p.data)[:, None] >> shifts) & 3, p, 1)


def pack_ternary_base3(codes) -> Packed:
  """Codes in {-1, 0, 1} -> ceil(n/5) bytes; a byte is sum_i (code_i + 1) * 3^i <= 242."""
  g, shape = _groups(codes, 5, 0, (-1, 0, 1))
  return Packed(((g + 1) * _POW3).sum(axis=1).astype(np.uint8), shape)


def unpack_ternary_base3(p: Packed) -> np.ndarray:
  return _restore((np.asarray(p.data)[:, None] // _POW3) % 3, p, 1)


def pack_signs(signs) -> Packed:
  """Values in {-1, +1} -> ceil(n/8) bytes; bit i of a group set where element i is +1."""
  g, shape = _groups(signs, 8, 1, (-1, 1))
  return Packed(np.packbits(g > 0, axis=1, bitorder='little').reshape(-1), shape)


def unpack_signs(p: Packed) -> np.ndarray:
  bits = np.unpackbits(np.asarray(p.data)[:, None], axis=1, bitorder='little')
  return _restore(bits.astype(np.int8) * 2, p, 1)

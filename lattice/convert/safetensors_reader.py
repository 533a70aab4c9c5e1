"""A Hugging Face checkpoint directory, read one tensor at a time.

`config.json` plus either `model.safetensors.index.json` (sharded: its weight_map
names each tensor's file) or the directory's `*.safetensors` files. The format
(https://huggingface.co/docs/safetensors: an 8-byte little-endian header length, a
JSON header of {name: {dtype, shape, data_offsets}}, then the bytes) is read with
plain `readinto` of one tensor's byte range, not through a memory map: a map's
touched pages count in the process's resident set until it is closed, so reading
tensor by tensor from a map would hold twice the tensor (or the file) resident.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

from lattice.convert.hf_config import ConvertError

INDEX = 'model.safetensors.index.json'
TOKENIZER_FILES = ('tokenizer.json', 'tokenizer_config.json', 'tokenizer.model',
                   'special_tokens_map.json', 'vocab.json', 'merges.txt',
                   'generation_config.json', 'chat_template.jinja')


# safetensors dtype names -> numpy (bfloat16 and float8 through ml_dtypes).
DTYPES = {'F64': np.float64, 'F32': np.float32, 'F16': np.float16,
          'BF16': ml_dtypes.bfloat16, 'F8_E4M3': ml_dtypes.float8_e4m3fn,
          'F8_E5M2': ml_dtypes.float8_e5m2, 'I64': np.int64, 'I32': np.int32,
          'I16': np.int16, 'I8': np.int8, 'U8': np.uint8, 'BOOL': np.bool_}
# A cast or transposed read goes through buffers of at most this many bytes.
CHUNK_BYTES = 4 << 20


def read_header(path: Path) -> tuple[int, dict[str, Any]]:
  """(byte offset of the data, {name: {dtype, shape, data_offsets}}) of a file."""
  with open(path, 'rb') as f:
    n = int.from_bytes(f.read(8), 'little')
    header = json.loads(f.read(n))
  header.pop('__metadata__', None)
  return 8 + n, header


class HFCheckpoint:
  """Lazy access to the tensors of a HF checkpoint directory `directory`."""

  def __init__(self, directory: str | os.PathLike[str]):
    self.directory = Path(directory)
    config_path = self.directory / 'config.json'
    if not config_path.is_file():
      raise ConvertError(f'--from: {self.directory} has no config.json (expected a '
                         f'Hugging Face checkpoint directory)')
    self.config: dict[str, Any] = json.loads(config_path.read_text())
    self._file: dict[str, Path] = {}
    self._entry: dict[str, tuple[int, dict[str, Any]]] = {}
    self._indexed = False

  def _index(self) -> None:
    """Reads every file's header (once, on first use)."""
    if self._indexed:
      return
    index = self.directory / INDEX
    if index.is_file():
      weight_map = json.loads(index.read_text())['weight_map']
      files = sorted({self.directory / f for f in weight_map.values()})
    else:
      files = sorted(self.directory.glob('*.safetensors'))
      if not files:
        raise ConvertError(f'--from: {self.directory} has no *.safetensors files (a '
                           f'.bin/.pth checkpoint must be re-saved with safetensors)')
    for f in files:
      if not f.is_file():
        raise ConvertError(f'--from: {f} is listed in {INDEX} but missing')
      start, header = read_header(f)
      for name, entry in header.items():
        self._file[name] = f
        self._entry[name] = (start, entry)
    self._indexed = True

  def names(self) -> list[str]:
    self._index()
    return sorted(self._file)

  def __contains__(self, name: str) -> bool:
    self._index()
    return name in self._file

  def _locate(self, name: str) -> tuple[Path, int, np.dtype, tuple[int, ...]]:
    """(file, byte offset, dtype, shape) of the tensor `name`; ConvertError naming it
    if it is absent, of an unknown dtype, or its byte range does not fit."""
    self._index()
    if name not in self._file:
      raise ConvertError(f'missing tensor {name} in {self.directory} (the config asks '
                         f'for it; is the checkpoint truncated or of another model?)')
    start, entry = self._entry[name]
    if entry['dtype'] not in DTYPES:
      raise ConvertError(f'tensor {name}: dtype {entry["dtype"]} is not supported')
    dtype, shape = np.dtype(DTYPES[entry['dtype']]), tuple(entry['shape'])
    begin, end = entry['data_offsets']
    if end - begin != dtype.itemsize * int(np.prod(shape)):
      raise ConvertError(f'tensor {name}: {end - begin} bytes for shape '
                         f'{list(shape)} {entry["dtype"]} in {self._file[name]}')
    return self._file[name], start + begin, dtype, shape

  def get(self, name: str, *, transpose: bool = False, dtype: Any = None,
          out: np.ndarray | None = None) -> np.ndarray:
    """The tensor `name` as a C-contiguous numpy array (bfloat16 through ml_dtypes).

    `transpose` (2-D tensors only) returns w.T, `dtype` casts (default: the file's),
    and `out` is a C-contiguous destination of the result's shape and dtype. A cast
    or transpose is done CHUNK_BYTES of rows at a time, so reading holds the result
    and one chunk, never a second copy of the tensor.
    Raises ConvertError naming the tensor if it is absent, its dtype unknown, or the
    file truncated.
    """
    path, offset, src_dtype, shape = self._locate(name)
    if transpose and len(shape) != 2:
      raise ConvertError(f'tensor {name}: shape {list(shape)}; expected a 2-D weight')
    dtype = np.dtype(dtype or src_dtype)
    want = shape[::-1] if transpose else shape
    if out is None:
      out = np.empty(want, dtype)
    elif out.shape != want or out.dtype != dtype or not out.flags.c_contiguous:
      raise ValueError(f'out: {out.shape} {out.dtype} for {name}, needs {want} {dtype}')
    with open(path, 'rb') as f:
      f.seek(offset)
      if not transpose and dtype == src_dtype:
        self._read_exact(f, out.reshape(-1).view(np.uint8), name)
        return out
      rows = shape[0] if shape else 1
      row_elems = int(np.prod(shape[1:])) if len(shape) > 1 else 1
      step = max(1, CHUNK_BYTES // max(1, row_elems * src_dtype.itemsize))
      flat = out.reshape(rows, row_elems) if not transpose else out
      for r in range(0, rows, step):
        buf = np.empty((min(step, rows - r), row_elems), src_dtype)
        self._read_exact(f, buf.reshape(-1).view(np.uint8), name)
        if transpose:
          flat[:, r:r + len(buf)] = buf.T
        else:
          flat[r:r + len(buf)] = buf
    return out

  def _read_exact(self, f, dest: np.ndarray, name: str) -> None:
    if f.readinto(dest) != dest.nbytes:
      raise ConvertError(f'tensor {name}: {self._file[name]} is truncated')

  def tokenizer_files(self) -> list[Path]:
    return [self.directory / f for f in TOKENIZER_FILES if (self.directory / f).is_file()]

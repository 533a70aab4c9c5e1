"""Pre-tokenized corpora: flat token files, tokenized once (nanoGPT / MaxText style).

A corpus is one or more files of token ids laid end to end: `.npy` (any integer
dtype; its header says which) or raw `.bin` (little-endian uint16 by default, as
nanoGPT writes them; `uint32` for vocabularies over 65,536 via a `.uint32.bin`
suffix). Documents are separated by the tokenizer's EOS id. Windows of L+1 tokens
are read by offset — local files through `np.memmap`, remote ones (`gs://`) by a
ranged read — so nothing is scanned at start and a host reads only its windows.

`write_tokens` tokenizes any `lattice.data` source into such a file.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from etils import epath

_NPY_MAGIC = b'\x93NUMPY'


def _layout(path: str) -> tuple[np.dtype, int, int]:
  """(dtype, header bytes, number of tokens) of a token file."""
  p = epath.Path(path)
  size = p.stat().length
  if path.endswith('.npy'):
    with p.open('rb') as f:
      if f.read(6) != _NPY_MAGIC:
        raise ValueError(f'data.paths: {path} is not a .npy file')
      f.seek(0)
      version = np.lib.format.read_magic(f)
      read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
              else np.lib.format.read_array_header_2_0)
      shape, _, dtype = read(f)
      header = f.tell()
    if len(shape) != 1 or dtype.kind not in 'iu':
      raise ValueError(f'data.paths: {path} must hold a 1-D integer array, got '
                       f'{dtype}{list(shape)}')
    return dtype, header, int(shape[0])
  dtype = np.dtype('<u4' if path.endswith('.uint32.bin') else '<u2')
  if size % dtype.itemsize:
    raise ValueError(f'data.paths: {path} has {size} bytes, not a whole number of '
                     f'{dtype} tokens')
  return dtype, 0, size // dtype.itemsize


class TokenWindows:
  """Windows of `window` consecutive tokens over token `files` (a grain data source).

  Window i holds tokens [i*stride, i*stride + window) of the concatenated files,
  with stride = window - 1 so consecutive windows share one token (a window is
  inputs + the shifted targets) and every token is a target exactly once.

  Raises:
    ValueError: a file that is not a token file, or a corpus shorter than a window.
  """

  def __init__(self, files: Sequence[str], window: int):
    self._files, self._window = list(files), window
    self._layouts = [_layout(f) for f in self._files]
    self._offsets = np.cumsum([0] + [n for _, _, n in self._layouts])
    total = int(self._offsets[-1])
    if total < window:
      raise ValueError(f'data.paths: {total} tokens in {self._files} are fewer than '
                       f'one window of {window}')
    self._len = (total - 1) // (window - 1)
    self._maps: dict[int, np.ndarray] = {}

  def __len__(self) -> int:
    return self._len

  def _read(self, f: int, start: int, stop: int) -> np.ndarray:
    path, (dtype, header, n) = self._files[f], self._layouts[f]
    if '://' not in path:
      if f not in self._maps:
        self._maps[f] = np.memmap(path, dtype=dtype, mode='r', offset=header, shape=(n,))
      return np.asarray(self._maps[f][start:stop])
    with epath.Path(path).open('rb') as fh:
      fh.seek(header + start * dtype.itemsize)
      return np.frombuffer(fh.read((stop - start) * dtype.itemsize), dtype=dtype)

  def __getitem__(self, i: int) -> np.ndarray:
    start = int(i) * (self._window - 1)
    stop = start + self._window
    parts = []
    f = int(np.searchsorted(self._offsets, start, side='right')) - 1
    while start < stop:
      lo, hi = int(self._offsets[f]), int(self._offsets[f + 1])
      take = min(stop, hi)
      parts.append(self._read(f, start - lo, take - lo))
      start, f = take, f + 1
    return np.concatenate(parts).astype(np.int32)


def segments(tokens_BxW: np.ndarray, eos_id: int) -> tuple[np.ndarray, np.ndarray]:
  """Segment ids (from 1) and positions that restart after every EOS.

  Args:
    tokens_BxW: int windows of a flat token stream.
    eos_id: the document separator.

  Returns:
    (segment_ids_BxW int32, positions_BxW int32): a token after an EOS starts a new
    segment at position 0.
  """
  starts_BxW = np.zeros(tokens_BxW.shape, bool)
  starts_BxW[:, 1:] = tokens_BxW[:, :-1] == eos_id
  segment_ids_BxW = np.cumsum(starts_BxW, axis=1).astype(np.int32) + 1
  idx_BxW = np.broadcast_to(np.arange(tokens_BxW.shape[1]), tokens_BxW.shape)
  last_start_BxW = np.maximum.accumulate(np.where(starts_BxW, idx_BxW, 0), axis=1)
  return segment_ids_BxW, (idx_BxW - last_start_BxW).astype(np.int32)


def write_tokens(docs: Iterable[bytes], tokenizer, path: str) -> int:
  """Tokenizes `docs` (BOS + text + EOS each) into the token file `path`.

  The dtype is uint16 when the vocabulary fits, else uint32 (`.npy` records it; a
  `.bin` path must then end in `.uint32.bin`).

  Returns:
    The number of tokens written.

  Raises:
    ValueError: a `.bin` path whose name does not match the needed dtype.
  """
  dtype = np.uint16 if tokenizer.vocab_size <= 1 << 16 else np.uint32
  if path.endswith('.bin') and (dtype == np.uint32) != path.endswith('.uint32.bin'):
    raise ValueError(f'write_tokens: vocabulary {tokenizer.vocab_size} needs a '
                     f'{"*.uint32.bin" if dtype == np.uint32 else "*.bin"} path')
  ids = np.concatenate([tokenizer.encode(d, bos=True, eos=True).astype(dtype)
                        for d in docs])
  out = epath.Path(path)
  out.parent.mkdir(parents=True, exist_ok=True)
  with out.open('wb') as f:
    if path.endswith('.npy'):
      np.save(f, ids)
    else:
      f.write(ids.astype(np.dtype(dtype).newbyteorder('<')).tobytes())
  return int(ids.size)

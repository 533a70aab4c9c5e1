"""What a source needs at startup, computed once and cached: no corpus scan per host.

Opening a corpus used to read (and JSON-parse, or hash) every byte on every host
before step 1 (the issue measured 87 MB/s for JSONL: ~20 minutes per 100 GB). Now
a source reads only metadata at startup (a listing and each file's size and
version) plus what it validates eagerly (the first records), and everything that
depends on the bytes is computed once and stored in the index cache:

  * `line_rows(path)`: (byte offset, length) of each non-blank line of a JSONL file,
    from a vectorised newline scan (no JSON parsing), keyed by path, size and
    modification time, so a rewritten file is indexed again;
  * `index_units(n)`: the split hash of document keys '0'..'n-1' (see
    `sources._hash_unit`), which a hash split of n documents needs (sha256 costs
    ~1 s per million keys in Python);
  * `cached_json(key, compute)`: any small JSON result (the stdlib corpus's file
    list and content hash).

The cache folder is `$LATTICE_DATA_CACHE`, by default `~/.cache/lattice/data`; it
may be a bucket (`gs://...`), so every host of a pod shares one index written by the
first host that needs it. Entries are written whole (a temporary file and a rename
locally; one object write remotely), so a reader never sees half of one.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Callable
from typing import Any

import numpy as np
from etils import epath

# Bytes a newline scan reads per call: big enough for throughput, small enough for
# memory (the scan holds one chunk and a byte mask of it at a time).
_CHUNK = 16 << 20
# bytes.strip()'s whitespace: a line of only these is blank.
_WHITESPACE = np.zeros(256, bool)
_WHITESPACE[list(b' \t\n\r\x0b\x0c')] = True


def cache_dir() -> epath.Path:
  """The index cache folder (`$LATTICE_DATA_CACHE` or `~/.cache/lattice/data`)."""
  root = os.environ.get('LATTICE_DATA_CACHE') or os.path.join(
      os.path.expanduser('~'), '.cache', 'lattice', 'data')
  return epath.Path(root)


def version(path: str) -> tuple[int, int]:
  """(size in bytes, modification time) of a local or remote file: one stat, no read.

  Raises:
    OSError: the file cannot be stat'ed.
  """
  if '://' not in path:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns
  st = epath.Path(path).stat()
  return int(st.length), int(st.mtime or 0)


def _key(*parts: Any) -> str:
  return hashlib.sha256('\0'.join(map(str, parts)).encode()).hexdigest()[:32]


def _write(path: epath.Path, data: bytes) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  if '://' in os.fspath(path):
    path.write_bytes(data)
    return
  tmp = f'{path}.{os.getpid()}.tmp'
  with open(tmp, 'wb') as f:
    f.write(data)
  os.replace(tmp, path)


def _load_npy(path: epath.Path) -> np.ndarray | None:
  try:
    return np.load(io.BytesIO(path.read_bytes()), allow_pickle=False)
  except (OSError, ValueError):   # missing, or a torn/foreign file: recompute
    return None


def _save_npy(path: epath.Path, array: np.ndarray) -> None:
  buf = io.BytesIO()
  np.save(buf, array, allow_pickle=False)
  try:
    _write(path, buf.getvalue())
  except OSError:   # a read-only cache only costs the next start a rescan
    pass


def scan_lines(f) -> np.ndarray:
  """int64[N, 2] (byte offset, length incl. the newline) of each non-blank line of
  the binary file object `f`, read in chunks of 16 MiB; no line is parsed."""
  rows, pos, line_start, line_has = [], 0, 0, False
  while chunk := f.read(_CHUNK):
    buf = np.frombuffer(chunk, np.uint8)
    nonws = ~_WHITESPACE[buf]
    nl = np.flatnonzero(buf == 10)
    if len(nl):
      local = np.concatenate([[0], nl[:-1] + 1])
      # Line i of the chunk is bytes [local[i], nl[i]]: any non-whitespace in it?
      has = np.logical_or.reduceat(nonws[:nl[-1] + 1], local)
      has[0] |= line_has
      starts = pos + local
      starts[0] = line_start
      ends = pos + nl + 1
      rows.append(np.stack([starts[has], (ends - starts)[has]], axis=1))
      line_start = pos + int(nl[-1]) + 1
      line_has = bool(nonws[nl[-1] + 1:].any())
    else:
      line_has = line_has or bool(nonws.any())
    pos += len(buf)
  if line_start < pos and line_has:
    rows.append(np.array([[line_start, pos - line_start]]))
  return (np.concatenate(rows).astype(np.int64) if rows
          else np.zeros((0, 2), np.int64))


def line_rows(path: str, size: int, mtime: int) -> np.ndarray:
  """`scan_lines` of the file `path` of this `size` and `mtime`, from the cache when
  it holds them (then no byte of the file is read).

  Raises:
    OSError: the file cannot be read.
  """
  entry = cache_dir() / f'lines-{_key(path, size, mtime)}.npy'
  rows = _load_npy(entry)
  if rows is not None and rows.ndim == 2 and rows.shape[1] == 2:
    return rows
  with epath.Path(path).open('rb') as f:
    rows = scan_lines(f)
  _save_npy(entry, rows)
  return rows


def _units(keys: range) -> np.ndarray:
  # The same rule as sources._hash_unit: the first 8 bytes of sha256(key), as [0, 1).
  return np.fromiter(
      (int.from_bytes(hashlib.sha256(str(k).encode()).digest()[:8], 'little') / 2**64
       for k in keys), np.float64, len(keys))


def index_units(n: int) -> np.ndarray:
  """float64[n]: the split hash of keys '0'..'n-1', from a cached table that grows
  as larger corpora ask for more."""
  entry = cache_dir() / 'index-units.npy'
  table = _load_npy(entry)
  if table is None or table.ndim != 1:
    table = np.zeros(0, np.float64)
  if len(table) >= n:
    return table[:n]
  table = np.concatenate([table, _units(range(len(table), n))])
  _save_npy(entry, table)
  return table


def cached_json(key: tuple[Any, ...], compute: Callable[[], Any]) -> Any:
  """`compute()`, a JSON value, cached under `key` (any tuple of str()-able parts)."""
  entry = cache_dir() / f'json-{_key(*key)}.json'
  try:
    return json.loads(entry.read_text())
  except (OSError, ValueError):
    pass
  value = compute()
  try:
    _write(entry, json.dumps(value).encode())
  except OSError:
    pass
  return value

"""Parquet documents, read lazily by row group from local or remote files.

Opening a corpus reads only each file's footer (row-group sizes), never the data, so
a host starts in seconds however large the corpus is; a document is read when it is
asked for, one row group (and one column) at a time, and the last row group read is
kept. Paths go through `etils.epath`, so `gs://` works where gcsfs is installed.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Sequence

import pyarrow.parquet as pq
from etils import epath


class ParquetDocs:
  """Random access to column `field` of Parquet `files` (a grain data source).

  Raises:
    ValueError: a file that is not Parquet, or `field` missing or not a string
      column (naming `data.field` and the file).
  """

  def __init__(self, files: Sequence[str], field: str):
    self._files, self._field = list(files), field
    self._starts: list[int] = []      # global index of each row group's first row
    self._groups: list[tuple[int, int]] = []   # (file index, row group)
    total = 0
    for f, path in enumerate(self._files):
      meta = self._open(path).metadata
      names = meta.schema.to_arrow_schema().names
      if field not in names:
        raise ValueError(f'data.field: {field!r} is not a column of {path} '
                         f'(columns: {", ".join(names)})')
      for g in range(meta.num_row_groups):
        self._starts.append(total)
        self._groups.append((f, g))
        total += meta.row_group(g).num_rows
    self._len = total
    self._cache: tuple[int, list] | None = None
    self._lock = threading.Lock()

  def _open(self, path: str) -> pq.ParquetFile:
    try:
      return pq.ParquetFile(epath.Path(path).open('rb'))
    except Exception as e:  # pyarrow raises ArrowInvalid and friends
      raise ValueError(f'data.paths: cannot read {path} as Parquet ({type(e).__name__}: '
                       f'{str(e).splitlines()[0] if str(e) else ""})') from None

  def __len__(self) -> int:
    return self._len

  def __getitem__(self, i: int) -> bytes:
    i = int(i)
    if not 0 <= i < self._len:
      raise IndexError(i)
    g = bisect.bisect_right(self._starts, i) - 1
    with self._lock:
      if self._cache is None or self._cache[0] != g:
        f, group = self._groups[g]
        table = self._open(self._files[f]).read_row_group(group, columns=[self._field])
        self._cache = (g, table.column(0).to_pylist())
      value = self._cache[1][i - self._starts[g]]
    if not isinstance(value, str):
      raise ValueError(f'data.field: {self._field!r} of row {i} is '
                       f'{type(value).__name__}, not a string')
    return value.encode('utf-8')


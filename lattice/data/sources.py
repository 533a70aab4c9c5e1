"""Document sources: each yields raw text bytes as a deterministic grain MapDataset.

Built in: `stdlib` (the Python standard library's own source, a real code corpus on
every machine), `text`, `jsonl`, `arrayrecord` and `hf`, and the generated tasks of
`lattice/data/tasks/`; all are listed in the literal table `SOURCES` at the end.

Splits. A document goes to 'validation' when a hash of its key is below
`data.val_fraction`; the key is the relative path for `stdlib` and the document's
index in the (sorted, deterministic) corpus for the other sources, so a split
never depends on where the files live. Small corpora get two safeguards: with
`val_fraction > 0` and at least two documents each split keeps at least one
document (the last goes to validation, the first to train); a single-document
corpus (one big text file) is split by bytes instead, its last `val_fraction`
going to validation. `val_fraction == 0` leaves validation empty. With several
processes, a multi-file text/JSONL/Parquet corpus is shared by file and split
within each process's files (`get_shard`), so no host reads the whole corpus.

Every error a user can cause (missing path, glob matching nothing, binary file,
malformed JSONL line, missing field) raises `DataError`, a `ConfigError` naming the
config field and the path. Building a source reads metadata, not the corpus (see
`lattice.data.index`): paths, sizes and the first `_EAGER_CHECK` files or lines are
checked then, before anything compiles; a bad file or line further in raises when
it is read. Paths may be remote (`gs://...`, through `etils.epath`), except for
ArrayRecord, whose C++ reader opens local files only.
"""

from __future__ import annotations

import functools
import glob as glob_lib
import hashlib
import json
import os
import sys
import sysconfig
import typing
from collections.abc import Callable, Sequence
from typing import Any

import grain
import numpy as np
from etils import epath

from lattice.errors import ConfigError
from lattice.data import index
from lattice.data import parquet
from lattice.data.tasks import addition, arithmetic, induction, toolcalls

if typing.TYPE_CHECKING:  # annotations only: lattice.config imports the kind tables
  from lattice import config as config_lib

SPLITS = ('train', 'validation')
# Eager checks of ArrayRecord read this many records: enough to catch a wrong file
# or field, cheap even for billion-record datasets (the rest is checked on read).
_ARRAYRECORD_CHECK = 1000
_GLOB_CHARS = frozenset('*?[')
# Startup validates this many files (text) or lines per file (JSONL) eagerly; the rest
# is checked when read, so opening a corpus reads metadata, not the corpus.
_EAGER_CHECK = 64
_NEWLINE = b'\n'


class DataError(ConfigError):
  """Bad data a user can fix; the message names the config field and the path."""


SourceFn = Callable[['config_lib.DataConfig', str], grain.MapDataset]


def get_source(data_cfg: config_lib.DataConfig, split: str) -> grain.MapDataset:
  """Documents (bytes) of `split` ('train' | 'validation') of `data_cfg.source`; for
  a batch source (lattice.data.batches), the text documents its rows mix in."""
  if split not in SPLITS:
    raise ValueError(f'get_source: split must be one of {SPLITS}, got {split!r}')
  name = TEXT_OF_BATCH_SOURCE.get(data_cfg.source, data_cfg.source)
  if name not in SOURCES:
    raise DataError(f'data.source: {data_cfg.source!r} is not one of '
                    f'{", ".join([*SOURCES, *TEXT_OF_BATCH_SOURCE])}')
  ds = SOURCES[name](data_cfg, split)
  return ds.map(_as_bytes)


def _as_bytes(doc: Any) -> bytes:
  return doc.encode('utf-8') if isinstance(doc, str) else bytes(doc)


def _hash_unit(key: str) -> float:
  return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], 'little') / 2**64


def _split_indices(units: np.ndarray, val_fraction: float, split: str) -> np.ndarray:
  """Indices of the documents in `split`, from each key's `_hash_unit`; see the
  module docstring for the rule."""
  n = len(units)
  is_val = np.asarray(units) < val_fraction
  if val_fraction > 0 and n >= 2:
    if not is_val.any():
      is_val[-1] = True
    if is_val.all():
      is_val[0] = False
  return np.flatnonzero(is_val if split == 'validation' else ~is_val)


class _Mapped:
  """`fn(seq[i])`, computed on access: a lazy grain RandomAccessDataSource."""

  def __init__(self, seq: Sequence[Any], fn: Callable[[Any], bytes]):
    self._seq, self._fn = seq, fn

  def __len__(self) -> int:
    return len(self._seq)

  def __getitem__(self, i: int) -> bytes:
    return self._fn(self._seq[int(i)])


def _byte_range(docs: Sequence[bytes], i: int, start: int, stop: int) -> bytes:
  return docs[i][start:stop]


def _split_source(docs: Sequence[bytes], units: np.ndarray | None, val_fraction: float,
                  split: str) -> grain.MapDataset:
  """`docs` split by their keys' hash `units` (None: the keys are the indices '0',
  '1', ..., whose units come from the index cache)."""
  if len(docs) == 1 and val_fraction > 0:
    size = len(docs[0])
    cut = size - int(np.ceil(size * val_fraction))
    start, stop = (cut, size) if split == 'validation' else (0, cut)
    return grain.MapDataset.source(
        _Mapped([0] if stop > start else [],
                functools.partial(_byte_range, docs, start=start, stop=stop)))
  if units is None:
    units = index.index_units(len(docs))
  indices = _split_indices(units, val_fraction, split)
  return grain.MapDataset.source(_Mapped(indices, docs.__getitem__))


def _expand_paths(paths: str, keep_in_folder: Callable[[str], bool]) -> list[str]:
  """Files named by comma-separated files, folders (recursive) and globs, in order."""
  specs = [p.strip() for p in paths.split(',') if p.strip()]
  if not specs:
    raise DataError('data.paths: empty; give files, folders or globs, comma separated')
  files: list[str] = []
  for spec in specs:
    if '://' in spec:
      files.extend(_expand_remote(spec, keep_in_folder))
      continue
    spec = os.path.expanduser(spec)
    if _GLOB_CHARS & set(spec):
      matches = sorted(glob_lib.glob(spec, recursive=True))
      if not matches:
        raise DataError(f'data.paths: glob {spec!r} matches no files')
    elif os.path.exists(spec):
      matches = [spec]
    else:
      raise DataError(f'data.paths: {spec!r} does not exist')
    for match in matches:
      if os.path.isdir(match):
        found = _walk(match, keep_in_folder)
        if not found:
          raise DataError(f'data.paths: folder {match!r} holds no data files')
        files.extend(found)
      else:
        files.append(match)
  files = list(dict.fromkeys(files))  # Drop duplicates, keep the order.
  if not files:
    raise DataError(f'data.paths: {paths!r} names no files')
  return files


def _expand_remote(spec: str, keep: Callable[[str], bool]) -> list[str]:
  """A remote file, folder or glob (`gs://bucket/dir/*.parquet`) through etils.epath."""
  if _GLOB_CHARS & set(spec):
    cut = min(spec.index(c) for c in _GLOB_CHARS if c in spec)
    base = spec[:spec.rindex('/', 0, cut)]
    matches = sorted(str(p) for p in epath.Path(base).glob(spec[len(base) + 1:]))
    if not matches:
      raise DataError(f'data.paths: glob {spec!r} matches no files')
    return matches
  path = epath.Path(spec)
  if not path.exists():
    raise DataError(f'data.paths: {spec!r} does not exist')
  if path.is_dir():
    found = _walk_remote(path, keep)
    if not found:
      raise DataError(f'data.paths: folder {spec!r} holds no data files')
    return found
  return [spec]


def _walk_remote(folder: epath.Path, keep: Callable[[str], bool]) -> list[str]:
  """Files under a remote folder, as `_walk` finds them locally: one listing per
  folder (epath's backends refuse a recursive `**` glob on an object store)."""
  found = []
  base = str(folder).split('://', 1)[-1].rstrip('/')
  for root, dirnames, filenames in folder.walk():
    dirnames[:] = sorted(d for d in dirnames if not d.startswith('.'))
    # gcsfs names the walked folders without the scheme ('bucket/dir').
    rel = str(root).split('://', 1)[-1][len(base):].strip('/')
    found.extend(str(folder / rel / f) if rel else str(folder / f)
                 for f in filenames if not f.startswith('.') and keep(f))
  return sorted(found)


def _walk(folder: str, keep: Callable[[str], bool],
          skip_dirs: Sequence[str] = ()) -> list[str]:
  found = []
  for dirpath, dirnames, filenames in os.walk(folder):
    # Sorted in place so the walk order, and thus document order, is deterministic;
    # hidden entries (.git, .DS_Store) are never data.
    dirnames[:] = sorted(d for d in dirnames
                         if not d.startswith('.') and d not in skip_dirs)
    found.extend(os.path.join(dirpath, f) for f in sorted(filenames)
                 if not f.startswith('.') and keep(f))
  return found


def _open(path: str):
  """A binary file object of a local or remote (`gs://...`) file."""
  return open(path, 'rb') if '://' not in path else epath.Path(path).open('rb')


def _read(path: str, limit: int = -1) -> bytes:
  """The bytes of `path` (the first `limit` when limit >= 0), errors as DataError."""
  try:
    with _open(path) as f:
      return f.read(limit)
  except OSError as e:
    raise DataError(f'data.paths: cannot read {path!r}: {e.strerror or e}') from e


def _file_stamp(paths: Sequence[str]) -> tuple[tuple[str, int, int], ...]:
  """(path, size, modification time) per file: one stat each, no byte read; the
  cache key that changes when a file is rewritten."""
  stamp = []
  for p in paths:
    try:
      size, mtime = index.version(p)
    except OSError as e:
      raise DataError(f'data.paths: cannot read {p!r}: {e.strerror or e}') from e
    stamp.append((p if '://' in p else os.path.abspath(p), size, mtime))
  return tuple(stamp)


def _read_file(path: str) -> bytes:
  # Read lazily: holding a corpus in memory would be copied into every grain worker.
  return _read(path)


def _stdlib_listing() -> tuple[str, list[tuple[str, int, int]]]:
  """(root, [(relative path, size, mtime)]) of the stdlib's .py files: metadata only."""
  root = sysconfig.get_paths()['stdlib']
  listing = []
  # site-packages holds installed third-party code, not the standard library.
  for path in _walk(root, lambda f: f.endswith('.py'),
                    skip_dirs=('site-packages', '__pycache__')):
    try:
      st = os.stat(path)
    except OSError:
      continue  # A broken link: not part of the corpus.
    listing.append((os.path.relpath(path, root), st.st_size, st.st_mtime_ns))
  return root, listing


def _stdlib_read(root: str, rels: Sequence[str]) -> dict[str, Any]:
  """Reads every listed file once: the readable text files and the content hash."""
  kept = []
  digest = hashlib.sha256()
  n_bytes = 0
  for rel in rels:
    try:
      with open(os.path.join(root, rel), 'rb') as f:
        data = f.read()
    except OSError:
      continue  # Unreadable (permissions): not part of the corpus.
    if b'\0' in data:
      continue
    kept.append(rel)
    n_bytes += len(data)
    # Path and length delimit the files so the hash is unambiguous.
    digest.update(f'{rel}\0{len(data)}\0'.encode())
    digest.update(data)
  return dict(rels=kept, n_bytes=n_bytes, content_sha256=digest.hexdigest())


@functools.lru_cache(maxsize=None)
def _stdlib_scan() -> tuple[str, tuple[str, ...], dict[str, Any]]:
  """(root, sorted relative paths, info). The content is read (and hashed) once per
  installation: the index cache keeps the result under the listing's sizes and
  modification times, so a later start only lists and stats the files."""
  root, listing = _stdlib_listing()
  key = ('stdlib', root, sys.version, _key_of(listing))
  scan = index.cached_json(key, lambda: _stdlib_read(root, [r for r, _, _ in listing]))
  if not scan['rels']:
    raise DataError(f'data.source: no readable .py files under the stdlib {root!r}')
  info = dict(python_version=sys.version.split()[0], n_files=len(scan['rels']),
              n_bytes=scan['n_bytes'], content_sha256=scan['content_sha256'])
  return root, tuple(scan['rels']), info


def _key_of(listing: Sequence[tuple[str, int, int]]) -> str:
  return hashlib.sha256(json.dumps(listing).encode()).hexdigest()


def stdlib_info() -> dict[str, Any]:
  """What the `stdlib` source holds: python_version, n_files, n_bytes, content_sha256."""
  return dict(_stdlib_scan()[2])


def _stdlib_source(cfg: config_lib.DataConfig, split: str) -> grain.MapDataset:
  root, rels, _ = _stdlib_scan()
  docs = _Mapped([os.path.join(root, r) for r in rels], _read_file)
  units = np.array([_hash_unit(r) for r in rels], np.float64)
  return _split_source(docs, units, cfg.val_fraction, split)


def _check_text(path: str, data: bytes) -> bytes:
  if b'\0' in data:
    raise DataError(f'data.paths: {path!r} looks binary (it contains NUL bytes); the '
                    f'text source needs text files')
  return data


def _read_text(path: str) -> bytes:
  return _check_text(path, _read(path))


def _keep_any(_: str) -> bool:
  return True


def _keep_jsonl(f: str) -> bool:
  return f.endswith(('.jsonl', '.json', '.ndjson'))


def _keep_parquet(f: str) -> bool:
  return f.endswith('.parquet')


def _text_docs(cfg: config_lib.DataConfig,
               files: Sequence[str]) -> tuple[Sequence[bytes], np.ndarray]:
  """(documents, int64[N] position in `files` of each document's file): files as
  documents. Stats every file and reads the first 8 KiB of the first
  `_EAGER_CHECK` files; a later binary file fails when it is read."""
  del cfg
  stamp = _file_stamp(files)
  if not any(size for _, size, _ in stamp):
    raise DataError(f'data.paths: all {len(files)} files are empty: {files[0]!r}, ...')
  for path in files[:_EAGER_CHECK]:
    _check_text(path, _read(path, 8192))
  return _Mapped(files, _read_text), np.arange(len(files), dtype=np.int64)


def _text_source(cfg: config_lib.DataConfig, split: str) -> grain.MapDataset:
  docs, _ = _text_docs(cfg, _expand_paths(cfg.paths, _keep_any))
  return _split_source(docs, None, cfg.val_fraction, split)


def _jsonl_record(line: bytes, field: str, where: str) -> bytes:
  """The text of `field` in one JSONL line; `where` names it in errors."""
  try:
    record = json.loads(line)
  except ValueError as e:
    raise DataError(f'data.paths: malformed JSON line at {where}: {e}') from e
  if not isinstance(record, dict):
    raise DataError(f'data.paths: {where} is not a JSON object')
  if field not in record:
    raise DataError(f'data.field: {field!r} missing at {where} (keys: '
                    f'{", ".join(sorted(record)[:10])})')
  if not isinstance(record[field], str):
    raise DataError(f'data.field: {field!r} at {where} is a '
                    f'{type(record[field]).__name__}, expected a string')
  return record[field].encode('utf-8')


@functools.lru_cache(maxsize=64)
def _scan_jsonl(stamp: tuple[tuple[str, int, int], ...], field: str) -> np.ndarray:
  """int64[N, 3] rows (file index, byte offset, length), one per non-blank line.

  Each file's line offsets come from the index cache (a newline scan the first time a
  file of this size and modification time is seen, nothing read afterwards); the
  first `_EAGER_CHECK` lines of each of the first `_EAGER_CHECK` files are parsed now,
  the rest when they are read.
  """
  parts = []
  for file_idx, (path, size, mtime) in enumerate(stamp):
    try:
      lines = index.line_rows(path, size, mtime)
    except OSError as e:
      raise DataError(f'data.paths: cannot read {path!r}: {e.strerror or e}') from e
    if file_idx < _EAGER_CHECK and len(lines):
      check = lines[:_EAGER_CHECK]
      head = _read(path, int(check[-1].sum()))
      for offset, length in check.tolist():
        where = f'{path}:{head.count(_NEWLINE, 0, offset) + 1}'
        _jsonl_record(head[offset:offset + length], field, where)
    parts.append(np.column_stack([np.full(len(lines), file_idx, np.int64), lines]))
  rows = np.concatenate(parts) if parts else np.zeros((0, 3), np.int64)
  if not len(rows):
    raise DataError(f'data.paths: no JSON lines in {stamp[0][0]!r}, ...')
  return rows


def _jsonl_text(row: np.ndarray, paths: Sequence[str], field: str) -> bytes:
  """The text of one JSONL record; the scan stored (file, offset, length)."""
  file_idx, offset, length = (int(v) for v in row)
  with _open(paths[file_idx]) as f:
    f.seek(offset)
    line = f.read(length)
  return _jsonl_record(line, field, f'{paths[file_idx]} byte {offset}')


def _jsonl_docs(cfg: config_lib.DataConfig,
                files: Sequence[str]) -> tuple[Sequence[bytes], np.ndarray]:
  """(documents, int64[N] position in `files` of each document's file): one
  document per non-blank line, from the line index (`_scan_jsonl`)."""
  rows = _scan_jsonl(_file_stamp(files), cfg.field)
  docs = _Mapped(rows, functools.partial(_jsonl_text, paths=files, field=cfg.field))
  return docs, rows[:, 0]


def _jsonl_source(cfg: config_lib.DataConfig, split: str) -> grain.MapDataset:
  docs, _ = _jsonl_docs(cfg, _expand_paths(cfg.paths, _keep_jsonl))
  return _split_source(docs, None, cfg.val_fraction, split)


def _record_text(record: bytes, field: str | None) -> bytes:
  """An ArrayRecord record's text: the record itself, or its JSON `field`."""
  if field is None:
    return record
  text = json.loads(record).get(field)
  if not isinstance(text, str):
    raise DataError(f'data.field: {field!r} missing or not a string in an '
                    f'ArrayRecord record: {record[:80]!r}')
  return text.encode('utf-8')


def _json_object(record: bytes) -> dict[str, Any] | None:
  if not record.lstrip()[:1] == b'{':
    return None
  try:
    obj = json.loads(record)
  except ValueError:
    return None
  return obj if isinstance(obj, dict) else None


def _arrayrecord_source(cfg: config_lib.DataConfig, split: str) -> grain.MapDataset:
  files = _expand_paths(cfg.paths,
                        lambda f: '.array_record' in f or '.arrayrecord' in f)
  for p in files:
    if '://' in p:
      # The array_record reader opens its paths in C++ (riegeli), not through
      # etils.epath, and the PyPI wheel has no object-store file system: a gs://
      # path never opens (measured against the GCS emulator: it hangs).
      raise DataError(f'data.paths: ArrayRecord files must be local, got {p!r}; copy '
                      f'them to local disk, or use Parquet or token files (both read '
                      f'gs:// directly)')
    if not os.access(p, os.R_OK):
      raise DataError(f'data.paths: cannot read {p!r}')
  try:
    records = grain.sources.ArrayRecordDataSource(files)
    n = len(records)
  except Exception as e:  # array_record raises bare RuntimeErrors on bad files.
    raise DataError(f'data.paths: cannot open {files} as ArrayRecord: {e}') from e
  if n == 0:
    raise DataError(f'data.paths: ArrayRecord files {files} hold no records')
  # The first record decides the format: a JSON object means JSON with `field`.
  is_json = _json_object(records[0]) is not None
  for i in range(min(n, _ARRAYRECORD_CHECK)):
    record = records[i]
    if is_json:
      obj = _json_object(record)
      if obj is None:
        raise DataError(f'data.paths: ArrayRecord record {i} in {files} is not a JSON '
                        f'object, though record 0 is')
      if not isinstance(obj.get(cfg.field), str):
        raise DataError(f'data.field: {cfg.field!r} missing or not a string in '
                        f'ArrayRecord record {i} of {files}')
    elif b'\0' in record:
      raise DataError(f'data.paths: ArrayRecord record {i} in {files} looks binary '
                      f'(it contains NUL bytes); records must be UTF-8 text or JSON')
  docs = _Mapped(records, functools.partial(
      _record_text, field=cfg.field if is_json else None))
  return _split_source(docs, None, cfg.val_fraction, split)


def _hf_text(row: dict[str, Any], field: str) -> bytes:
  return row[field].encode('utf-8')


def _hf_source(cfg: config_lib.DataConfig, split: str) -> grain.MapDataset:
  try:
    import datasets  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise DataError("data.source: 'hf' needs the Hugging Face `datasets` package "
                    '(pip install datasets)') from e
  if not cfg.hf_name:
    raise DataError("data.hf_name: data.source='hf' needs a dataset name")
  try:
    dataset = datasets.load_dataset(cfg.hf_name, cfg.hf_config or None, split=cfg.hf_split,
                                    data_files=hf_data_files(cfg),
                                    revision=cfg.hf_revision or None)
  except Exception as e:  # Any failure here is a name, split or network problem.
    raise DataError(f'data.hf_name: cannot load {cfg.hf_name!r} split '
                    f'{cfg.hf_split!r}: {e}') from e
  if cfg.field not in dataset.column_names:
    raise DataError(f'data.field: {cfg.field!r} is not a column of {cfg.hf_name!r} '
                    f'(columns: {", ".join(dataset.column_names)})')
  if len(dataset) == 0:
    raise DataError(f'data.hf_name: {cfg.hf_name!r} split {cfg.hf_split!r} is empty')
  docs = _Mapped(dataset, functools.partial(_hf_text, field=cfg.field))
  return _split_source(docs, None, cfg.val_fraction, split)


def split_rows(rows: grain.MapDataset, val_fraction: float, split: str) -> grain.MapDataset:
  """The last ceil(n * val_fraction) rows are validation, the rest train: no scan of
  the corpus (the rule for sources too large to hash every key at start).

  Raises:
    ValueError: an unknown split.
  """
  if split not in SPLITS:
    raise ValueError(f'split_rows: split must be one of {SPLITS}, got {split!r}')
  n = len(rows)
  n_val = int(np.ceil(n * val_fraction)) if n >= 2 else 0
  return rows[n - n_val:] if split == 'validation' else rows[:n - n_val]


def expand_paths(paths: str, keep_in_folder: Callable[[str], bool]) -> list[str]:
  """Files named by comma-separated files, folders and globs (local or remote, e.g.
  `gs://`), in order; see `DataError` for what a bad path raises."""
  return _expand_paths(paths, keep_in_folder)


def hf_data_files(cfg: config_lib.DataConfig) -> list[str] | None:
  """`data.hf_data_files` as load_dataset's `data_files` (None when empty)."""
  files = [f.strip() for f in cfg.hf_data_files.split(',') if f.strip()]
  return files or None


def _parquet_docs(files: Sequence[str], field: str) -> grain.MapDataset:
  try:
    docs = parquet.ParquetDocs(files, field)
  except ValueError as e:
    raise DataError(str(e)) from None
  if len(docs) == 0:
    raise DataError(f'data.paths: Parquet files {files} hold no rows')
  return grain.MapDataset.source(docs)


def _parquet_source(cfg: config_lib.DataConfig, split: str) -> grain.MapDataset:
  docs = _parquet_docs(_expand_paths(cfg.paths, _keep_parquet), cfg.field)
  return split_rows(docs, cfg.val_fraction, split)


# Multi-file sources a process of several reads by file: (which files a folder
# holds, file list -> (documents, each document's file)); see `get_shard`.
_BY_FILE: dict[str, tuple[Callable[[str], bool], Callable[..., Any] | None]] = {
    'text': (_keep_any, _text_docs),
    'jsonl': (_keep_jsonl, _jsonl_docs),
    'parquet': (_keep_parquet, None),   # split by rows, as `_parquet_source`
}


def _shard_units(file_ids: np.ndarray, within: np.ndarray) -> np.ndarray:
  """float64[N] split hashes of documents keyed (file position f, index j in it):
  (unit of key 'j' + unit of key 'file f') mod 1, i.e. the cached `index_units`
  table shifted by one hash per file, so no sha256 runs per document."""
  if not len(within):
    return np.zeros(0, np.float64)
  units = index.index_units(int(within.max()) + 1)[within]
  shift = {f: _hash_unit(f'file {f}') for f in np.unique(file_ids).tolist()}
  return np.mod(units + np.array([shift[f] for f in file_ids.tolist()]), 1.0)


def get_shard(data_cfg: config_lib.DataConfig, split: str, process_index: int,
              process_count: int) -> grain.MapDataset | None:
  """Documents (bytes) of `split` in process `process_index`'s own files, or None
  where the corpus is read by documents (`get_source(...)[index::count]`).

  For `text`, `jsonl` and `parquet` with `process_count > 1` and at least as many
  files as processes, process i opens, stats and indexes only files
  i::process_count of the file list (`data.paths` expanded, in order), so no host
  scans the whole corpus. The split is then made within those files, so it does
  not depend on other hosts' files: text/JSONL documents by the hash of (file
  position, index in the file) (`_shard_units`), with `_split_indices`'s
  safeguards per process; Parquet by its last rows (`split_rows`). The two
  splits stay disjoint and deterministic, but differ from the one-process split
  (which hashes global document indices). Everything else (one process, fewer
  files than processes, other sources, the embedded `stdlib` corpus) returns
  None: the caller falls back to document sharding, as before.

  Raises:
    ValueError: an unknown split or process index.
    DataError: as `get_source` for a bad path or file.
  """
  if split not in SPLITS:
    raise ValueError(f'get_shard: split must be one of {SPLITS}, got {split!r}')
  if not 0 <= process_index < process_count:
    raise ValueError(f'get_shard: process_index={process_index} must lie in '
                     f'[0, process_count={process_count})')
  if process_count == 1 or data_cfg.source not in _BY_FILE:
    return None
  keep, open_docs = _BY_FILE[data_cfg.source]
  files = _expand_paths(data_cfg.paths, keep)
  if len(files) < process_count:
    return None
  own = np.arange(process_index, len(files), process_count)
  mine = [files[i] for i in own]
  if open_docs is None:
    ds = split_rows(_parquet_docs(mine, data_cfg.field), data_cfg.val_fraction, split)
    return ds.map(_as_bytes)
  docs, file_of = open_docs(data_cfg, mine)
  within = np.arange(len(file_of)) - np.searchsorted(file_of, file_of, side='left')
  units = _shard_units(own[file_of], within)
  return _split_source(docs, units, data_cfg.val_fraction, split).map(_as_bytes)


# data.source -> (data config, split) -> documents. `lattice.config` checks
# data.source against this table, WINDOW_SOURCES and lattice.data.batches.BATCH_SOURCES.
SOURCES: dict[str, SourceFn] = {
    'stdlib': _stdlib_source,
    'text': _text_source,
    'jsonl': _jsonl_source,
    'arrayrecord': _arrayrecord_source,
    'hf': _hf_source,
    'parquet': _parquet_source,
    'induction': induction.source,
    'arithmetic': arithmetic.source({'train': 'train', 'validation': 'test'}),
    'arithmetic_ood': arithmetic.source({'train': 'train', 'validation': 'ood'}),
    'toolcalls': toolcalls.source(tuple(toolcalls.CLUSTERS)),
    **{f'toolcalls_{c}': toolcalls.source((c,)) for c in toolcalls.CLUSTERS},
    'moa_arith': addition.source('moa_arith'),
    'moa_aggregate': addition.source('moa_aggregate'),
}

# Batch sources (lattice.data.batches.BATCH_SOURCES) -> the document source of the
# text their rows mix in, which is what a text view of their data (prompts, corpus
# statistics, `pipeline.describe`) reads.
TEXT_OF_BATCH_SOURCE = {'shapes': 'stdlib'}

# Sources read as token windows, not documents (lattice.data.pipeline): pre-tokenized
# files (lattice.data.token_files).
WINDOW_SOURCES = ('tokens',)

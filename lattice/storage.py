"""Where a run's files live: a local folder or an object store (`gs://...`).

Every path lattice writes or reads (workdir, checkpoints, metrics.jsonl,
result.json, table.md, plots, config.json, run records, tokenizers) goes through
`path()`, an `etils.epath.Path`: local paths behave as `pathlib.Path`, and
`gs://BUCKET/...` (or any scheme epath's backends serve: tf.io.gfile or fsspec,
e.g. gcsfs) is read, written, listed and globbed the same way. `pathlib.Path`
would collapse `gs://b/x` into a local folder `gs:/b/x`.

Two things differ on an object store, and the helpers below hide them:
  * there is no append: an object is replaced whole (gcsfs warns and overwrites),
    so `append_text` rewrites the object with the old text plus the new;
  * a write is already atomic (an object appears whole or not at all), so
    `write_atomic` writes straight to it, where a local file goes through a
    temporary file and a rename.
"""

from __future__ import annotations

import os
import tempfile

from etils import epath


def is_remote(p: str | os.PathLike[str]) -> bool:
  """Whether `p` names an object store (it has a scheme, e.g. gs://), not a folder."""
  return '://' in os.fspath(p)


def path(p: str | os.PathLike[str]) -> epath.Path:
  """`p` as an epath.Path (`gs://...` stays remote; a local path stays as given)."""
  return p if isinstance(p, epath.Path) else epath.Path(os.fspath(p))


def absolute(p: str | os.PathLike[str]) -> epath.Path:
  """`path(p)`, made absolute (and `~` expanded) when local; remote paths as given."""
  p = os.fspath(p)
  return epath.Path(p if is_remote(p) else os.path.abspath(os.path.expanduser(p)))


def write_atomic(p: str | os.PathLike[str], text: str) -> None:
  """Writes `text` so a reader sees the old file or the new, never half of one.

  Local: a temporary file in the same folder, then `os.replace` (mode 0644). Remote:
  one object write (atomic by itself). Parent folders are created."""
  p = path(p)
  p.parent.mkdir(parents=True, exist_ok=True)
  if is_remote(p):
    p.write_text(text)
    return
  fd, tmp = tempfile.mkstemp(dir=os.fspath(p.parent), prefix=f'.{p.name}.', suffix='.tmp')
  try:
    with os.fdopen(fd, 'w') as f:
      f.write(text)
    os.chmod(tmp, 0o644)  # mkstemp makes 0600
    os.replace(tmp, os.fspath(p))
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def append_text(p: str | os.PathLike[str], text: str) -> None:
  """Appends `text` to the file `p` (created if missing).

  On an object store this rewrites the whole object (O(file size) per call): use it
  for small files, or batch the appends (see recorder.MetricsWriter)."""
  p = path(p)
  if is_remote(p):
    old = p.read_text() if p.exists() else ''
    p.write_text(old + text)
    return
  with p.open('a') as f:
    f.write(text)


def invalidate_listings(p: str | os.PathLike[str]) -> None:
  """Drops every cached listing of `p`'s object store (no-op when local).

  fsspec filesystems (gcsfs) cache folder listings per instance, and etils.epath,
  Orbax and lattice may each hold their own instance; after objects are moved or
  deleted behind one of them, all must list afresh."""
  if not is_remote(p):
    return
  import fsspec  # pylint: disable=g-import-not-at-top
  fs = fsspec.core.url_to_fs(os.fspath(p))[0]
  for instance in list(getattr(type(fs), '_cache', {}).values()) + [fs]:
    instance.invalidate_cache()

"""Checkpoint seals: the size and a digest of every file of a step, checked on restore.

A step is sealed just before Orbax commits it (`lattice_manifest.json`). Where the
digests come from decides what sealing and verifying cost:

* On an object store whose listing carries its own checksum (GCS: crc32c, computed
  by the writing client and checked by the server), the seal is one listing of the
  step and so is verifying it: no checkpoint byte is read back.
* On a local or shared (NFS) folder the digest is a sha256 of the bytes, and the
  work is split over the processes that wrote the step: process i hashes the files
  `sorted(names)[i::n]` into `lattice_manifest.part-<i>-of-<n>.json` once every
  process's writes are done, and process 0 merges the parts into the seal (hashing
  only what no part covers). On restore every process first checks the presence
  and size of every file (metadata only), then the digests of its own share; the
  step is good only if every process's share is. So no host reads more than 1/n of
  the checkpoint, at a save or a resume, and a run with one process reads it once.

Verification is lazy: only the step about to be restored is checked (the newest
first, older ones only if it fails), never at startup or at every save.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from etils import epath
import fsspec

from lattice import storage

MANIFEST = 'lattice_manifest.json'
_PART_PREFIX = 'lattice_manifest.part-'
# Orbax rewrites these at the commit itself, after the manifest is written; a bad
# one makes Orbax's own restore fail loudly, so they are left out of the seal.
COMMIT_FILES = frozenset({'_CHECKPOINT_METADATA', 'commit_success.txt'})
_STORE_DIGESTS = ('crc32c', 'md5Hash')  # what GCS listings carry, best first


def _sealed(name: str) -> bool:
  """Whether a file of a step is covered by its seal (not the seal's own files)."""
  base = name.rsplit('/', 1)[-1]
  return name not in COMMIT_FILES and name != MANIFEST and not base.startswith(_PART_PREFIX)


def files(step_dir: epath.Path) -> dict[str, epath.Path]:
  """Relative name -> path of every file under `step_dir` that the seal covers."""
  out = {}
  stack = [step_dir]
  while stack:
    for child in stack.pop().iterdir():
      if child.is_dir():
        stack.append(child)
        continue
      name = str(child.relative_to(step_dir))
      if _sealed(name):
        out[name] = child
  return out


def sha256(path: epath.Path) -> str:
  digest = hashlib.sha256()
  with path.open('rb') as f:
    while chunk := f.read(1 << 20):
      digest.update(chunk)
  return digest.hexdigest()


def share(names, index: int, count: int) -> list[str]:
  """The names process `index` of `count` hashes: `sorted(names)[index::count]`."""
  return sorted(names)[index::count]


def store_listing(step_dir: epath.Path) -> dict[str, dict[str, Any]] | None:
  """Remote: relative name -> {'bytes', <the store's checksum>} of every file
  under `step_dir`, from one listing; None when local or when the store gives no
  checksum (then the bytes are hashed)."""
  if not storage.is_remote(step_dir):
    return None
  fs, root = fsspec.core.url_to_fs(os.fspath(step_dir))
  root = root.rstrip('/')
  fs.invalidate_cache(root)  # a listing cached before the last writes would be stale
  out = {}
  for full, info in fs.find(root, detail=True).items():
    name = full[len(root) + 1:]
    if not name or not _sealed(name):
      continue
    kind = next((k for k in _STORE_DIGESTS if info.get(k)), None)
    if kind is None:
      return None
    out[name] = {'bytes': int(info['size']), kind: str(info[kind])}
  return out


def _part_name(index: int, count: int) -> str:
  return f'{_PART_PREFIX}{index}-of-{count}.json'


def write_part(step_dir: str | os.PathLike[str], index: int, count: int) -> None:
  """Process `index` of `count`: hashes its share of `step_dir`'s files into a part
  that `write_manifest` merges (local folders; a store with checksums needs none)."""
  step_dir = epath.Path(step_dir)
  if store_listing(step_dir) is not None:
    return
  found = files(step_dir)
  part = {name: {'bytes': found[name].stat().length, 'sha256': sha256(found[name])}
          for name in share(found, index, count)}
  (step_dir / _part_name(index, count)).write_text(json.dumps(part, sort_keys=True))


def write_manifest(step_dir: str | os.PathLike[str]) -> dict[str, Any]:
  """Seals `step_dir`: the size and digest of each of its files (the store's
  checksums from one listing when remote; else sha256s, taken from the processes'
  parts where they wrote them, the rest hashed here). Removes the parts."""
  step_dir = epath.Path(step_dir)
  listing = store_listing(step_dir)
  parts = sorted(step_dir.glob(f'{_PART_PREFIX}*'))
  hashed_by = 1
  if listing is not None:
    entries = listing
  else:
    found, entries = files(step_dir), {}
    for part in parts:
      entries.update({k: v for k, v in json.loads(part.read_text()).items() if k in found})
    hashed_by = max(len(parts), 1)
    for name in sorted(set(found) - set(entries)):
      entries[name] = {'bytes': found[name].stat().length, 'sha256': sha256(found[name])}
  manifest = {'format': 1, 'files': dict(sorted(entries.items())), 'hashed_by': hashed_by}
  (step_dir / MANIFEST).write_text(json.dumps(manifest, indent=0, sort_keys=True))
  for part in parts:
    part.unlink(missing_ok=True)
  return manifest


def verify(step_dir: str | os.PathLike[str], index: int = 0, count: int = 1) -> str | None:
  """None if `step_dir` matches its manifest, else why not (one line).

  Presence and sizes are checked for every file (metadata only); digests for the
  share of process `index` of `count` (all of them with the defaults). Remote steps
  sealed with store checksums are checked from one listing, whole.
  """
  step_dir = epath.Path(step_dir)
  manifest_path = step_dir / MANIFEST
  if not manifest_path.exists():
    return (f'no {MANIFEST} (never sealed: the save did not finish, or it was '
            'written by an older lattice)')
  try:
    expected = json.loads(manifest_path.read_text())['files']
    kinds = {str(k): next(d for d in ('sha256', *_STORE_DIGESTS) if d in v)
             for k, v in expected.items()}
    expected = {str(k): (int(v['bytes']), str(v[kinds[str(k)]]))
                for k, v in expected.items()}
  except (ValueError, KeyError, TypeError, AttributeError, StopIteration) as e:
    return f'{MANIFEST} is unreadable ({type(e).__name__}: {e})'
  if 'sha256' not in kinds.values():
    listing = store_listing(step_dir)
    if listing is not None:
      return _compare(expected, kinds, listing)
  found = files(step_dir)
  if missing := sorted(set(expected) - set(found)):
    return f'file {missing[0]} is missing'
  if extra := sorted(set(found) - set(expected)):
    return f'file {extra[0]} was not there when it was saved'
  for name, (want, _) in sorted(expected.items()):
    size = found[name].stat().length
    if size != want:
      how = 'truncated' if size < want else 'grown since it was saved'
      return f'file {name} has {size} bytes, {want} were saved ({how})'
  for name in share(expected, index, count):
    if sha256(found[name]) != expected[name][1]:
      return f'file {name} does not match its sha256 (modified since it was saved)'
  return None


def _compare(expected: dict[str, tuple[int, str]], kinds: dict[str, str],
             listing: dict[str, dict[str, Any]]) -> str | None:
  """`verify` against a store listing (sizes and the store's checksums)."""
  if missing := sorted(set(expected) - set(listing)):
    return f'file {missing[0]} is missing'
  if extra := sorted(set(listing) - set(expected)):
    return f'file {extra[0]} was not there when it was saved'
  for name, (want_bytes, want) in sorted(expected.items()):
    size = listing[name]['bytes']
    if size != want_bytes:
      how = 'truncated' if size < want_bytes else 'grown since it was saved'
      return f'file {name} has {size} bytes, {want_bytes} were saved ({how})'
    if listing[name].get(kinds[name]) != want:
      return (f'file {name} does not match its {kinds[name]} (modified since it was '
              'saved)')
  return None

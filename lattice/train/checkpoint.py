"""Orbax checkpoints of the train state together with the grain iterator state.

A checkpoint step holds two items:
  state  the train state pytree (jax Arrays, possibly sharded over a mesh), written
         asynchronously by Orbax's StandardCheckpointHandler;
  data   the grain iterator state (optional), written by grain's own Orbax handler
         as one small JSON file per process (`process_<i>-of-<n>.json`), so each
         process of a `jax.distributed` run resumes its own shard of the data.

grain's handler is synchronous; inside Orbax's async save it runs (a few KB of
JSON) before `save` returns, so the iterator state is the one at the save call
while the arrays are still being written in the background.

Surviving faults. Orbax writes a step into `<step>.orbax-checkpoint-tmp` and
renames it to `<step>` only when every process has finished (on GCS it writes
`commit_success.txt` instead), so a run killed mid-save (`kill -9`, a lost host)
leaves the previous steps untouched and an uncommitted folder that Orbax ignores
and removes at the next start. On top of that, process 0 seals each step just
before the commit with `lattice_manifest.json`: the size and a digest of every
file in it. Locally the digest is a sha256 of the file's bytes. On an object store
whose listing carries the store's own checksum (GCS: crc32c, computed over the
uploaded bytes by the writing process's client and checked by the server), the
digest is that checksum, so sealing and verifying read one listing of the step,
not its bytes: no host re-reads the checkpoint. A restore verifies the seal first; a truncated, tampered or unsealed step is
moved to `<directory>/corrupt/` with a warning naming it, and the run resumes from
the newest step that verifies, so garbage is never loaded silently. A save that
fails (disk full, permissions) raises `CheckpointError` naming the step and the
steps still intact; nothing half-written is ever committed.

Remote directories (`gs://...`) work as local ones (through etils.epath and
tensorstore). Against a GCS emulator (`TENSORSTORE_GCS_HTTP_URL` set, as
tests/gcs_emulator.py does) the arrays are written without OCDBT: OCDBT's
conditional manifest writes failed intermittently against gcp-storage-emulator
("Malformed StorageGeneration"), while one zarr store per array works; restore
reads either layout.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from absl import logging
from etils import epath
import fsspec
import grain
import jax
import numpy as np
import orbax.checkpoint as ocp

from lattice import config as config_lib
from lattice import storage

_STATE, _DATA = 'state', 'data'
MANIFEST = 'lattice_manifest.json'
QUARANTINE = 'corrupt'
# Orbax rewrites these at the commit itself, after the manifest is written; a bad
# one makes Orbax's own restore fail loudly, so they are left out of the seal.
_COMMIT_FILES = frozenset({'_CHECKPOINT_METADATA', 'commit_success.txt'})
_TMP_SUFFIX = '.orbax-checkpoint-tmp'


class CheckpointError(RuntimeError):
  """A checkpoint could not be written (disk full, permissions, a lost mount)."""


class CorruptCheckpointError(ValueError):
  """A checkpoint step on disk does not match the manifest written when it was saved."""


def _abstract(leaf: Any) -> Any:
  """Concrete jax Arrays -> ShapeDtypeStructs carrying their shardings."""
  if isinstance(leaf, jax.Array):
    return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=leaf.sharding)
  return leaf


def _use_ocdbt() -> bool:
  """OCDBT (one database per process) except against a GCS emulator (module doc)."""
  return not os.environ.get('TENSORSTORE_GCS_HTTP_URL')


def _path(directory: str | os.PathLike[str]) -> epath.Path:
  directory = os.fspath(directory)
  # Cloud paths (gs://...) stay as they are; local ones become absolute because
  # Orbax resolves relative paths against a working directory that may change.
  if '://' not in directory:
    directory = os.path.abspath(os.path.expanduser(directory))
  return epath.Path(directory)


def _files(step_dir: epath.Path) -> dict[str, epath.Path]:
  """Relative name -> path of every file under `step_dir` (the seal's subject)."""
  out = {}
  stack = [step_dir]
  while stack:
    for child in stack.pop().iterdir():
      if child.is_dir():
        stack.append(child)
        continue
      name = str(child.relative_to(step_dir))
      if name not in _COMMIT_FILES and name != MANIFEST:
        out[name] = child
  return out


def _sha256(path: epath.Path) -> str:
  digest = hashlib.sha256()
  with path.open('rb') as f:
    while chunk := f.read(1 << 20):
      digest.update(chunk)
  return digest.hexdigest()


_STORE_DIGESTS = ('crc32c', 'md5Hash')  # what GCS listings carry, best first


def _store_listing(step_dir: epath.Path) -> dict[str, dict[str, Any]] | None:
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
    if not name or name in _COMMIT_FILES or name == MANIFEST:
      continue
    kind = next((k for k in _STORE_DIGESTS if info.get(k)), None)
    if kind is None:
      return None
    out[name] = {'bytes': int(info['size']), kind: str(info[kind])}
  return out


def write_manifest(step_dir: str | os.PathLike[str]) -> dict[str, Any]:
  """Seals `step_dir`: writes the size and digest of each of its files (the
  store's checksum from one listing when remote, else a sha256 of the bytes)."""
  step_dir = epath.Path(step_dir)
  files = _store_listing(step_dir)
  if files is None:
    files = {name: {'bytes': p.stat().length, 'sha256': _sha256(p)}
             for name, p in sorted(_files(step_dir).items())}
  manifest = {'format': 1, 'files': files}
  (step_dir / MANIFEST).write_text(json.dumps(manifest, indent=0, sort_keys=True))
  return manifest


def verify(step_dir: str | os.PathLike[str]) -> str | None:
  """None if `step_dir` matches its manifest, else why not (one line)."""
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
    listing = _store_listing(step_dir)
    if listing is not None:
      return _compare(expected, kinds, listing)
  found = _files(step_dir)
  if missing := sorted(set(expected) - set(found)):
    return f'file {missing[0]} is missing'
  if extra := sorted(set(found) - set(expected)):
    return f'file {extra[0]} was not there when it was saved'
  for name, (want, _) in sorted(expected.items()):
    size = found[name].stat().length
    if size != want:
      how = 'truncated' if size < want else 'grown since it was saved'
      return f'file {name} has {size} bytes, {want} were saved ({how})'
  for name, (_, want) in sorted(expected.items()):
    if _sha256(found[name]) != want:
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


class Checkpointer:
  """Saves and restores (train state, data iterator) under `directory`.

  `cfg.every` is the save interval (`save(..., force=True)` ignores it), `cfg.keep`
  the number of checkpoints kept, `cfg.async_save` whether array writes overlap
  training. With `cfg.enabled=False` nothing is ever written (restore still works).
  """

  def __init__(self, directory: str | os.PathLike[str],
               cfg: config_lib.CheckpointConfig):
    if cfg.keep < 1:
      raise config_lib.ConfigError(f'checkpoint.keep: must be positive, got {cfg.keep}')
    if cfg.every < 1:
      raise config_lib.ConfigError(f'checkpoint.every: must be positive, got '
                                   f'{cfg.every}')
    self._cfg = cfg
    self.directory = _path(directory)
    self._saving: int | None = None  # the step whose write is in flight
    self._skipped: set[int] = set()  # corrupt steps that could not be moved aside
    options = ocp.CheckpointManagerOptions(
        max_to_keep=cfg.keep,
        save_interval_steps=cfg.every,
        # Always Orbax's async path: its post-finalization hook (which seals the
        # step before the commit) exists only there; sync saves wait at once.
        enable_async_checkpointing=True,
        async_options=ocp.AsyncOptions(post_finalization_callback=self._seal),
        cleanup_tmp_directories=True,  # uncommitted leftovers of a killed run
        create=True,
    )
    # Remove a killed run's uncommitted leftovers now, synchronously: Orbax's own
    # cleanup runs in the background and races the rmtree a save of the same step
    # does (seen as FileNotFoundError on '<step>.orbax-checkpoint-tmp' under load).
    if jax.process_index() == 0 and self.directory.exists():
      for leftover in self.directory.glob(f'*{_TMP_SUFFIX}*'):
        if leftover.is_dir():
          leftover.rmtree(missing_ok=True)
    try:
      self._manager = ocp.CheckpointManager(
          self.directory, options=options, item_handlers={
              _STATE: ocp.StandardCheckpointHandler(use_ocdbt=_use_ocdbt()),
              _DATA: grain.checkpoint.CheckpointHandler()})
    except OSError as e:
      raise CheckpointError(f'checkpoint: cannot use {self.directory}: {e}') from e

  def latest_step(self) -> int | None:
    steps = self.all_steps()
    return steps[-1] if steps else None

  def all_steps(self) -> list[int]:
    return sorted(set(self._manager.all_steps()) - self._skipped)

  def _in_flight_dir(self, step: int) -> epath.Path:
    """Where step `step` is being written: its tmp folder, or itself on GCS."""
    tmp = self.directory / f'{step}{_TMP_SUFFIX}'
    if tmp.exists():
      return tmp
    tmps = sorted(self.directory.glob(f'{step}{_TMP_SUFFIX}*'))
    return tmps[-1] if tmps else self.directory / str(step)

  def _seal(self) -> None:
    """Orbax's post-finalization hook: process 0, all writes done, not yet committed."""
    if self._saving is not None:
      write_manifest(self._in_flight_dir(self._saving))

  def _failed(self, step: int | None, e: BaseException) -> CheckpointError:
    self._manager.reload()  # forget the uncommitted step
    return CheckpointError(
        f'checkpoint: writing step {step} to {self.directory} failed: '
        f'{type(e).__name__}: {e}; nothing of it was committed, and the earlier '
        f'checkpoints (steps {self.all_steps()}) are intact')

  def save(self, step: int, state: Any, data_iter: grain.DatasetIterator | None = None,
           *, force: bool = False) -> bool:
    """Starts saving `state` (and `data_iter`'s position) at `step`.

    Returns whether a save started: False when checkpointing is disabled, `step`
    is not a multiple of `cfg.every` (unless `force`), or `step` is not newer
    than the latest checkpoint (e.g. the final save of a run that just resumed).
    Raises CheckpointError if this save, or the previous one still in flight,
    cannot be written.
    """
    if not self._cfg.enabled:
      return False
    self.wait()  # surfaces a failed previous write before starting a new one
    latest = self.latest_step()
    if latest is not None and step <= latest:
      logging.info('checkpoint: step %d not newer than saved step %d; skipped',
                   step, latest)
      return False
    items = {_STATE: ocp.args.StandardSave(state)}
    if data_iter is not None:
      items[_DATA] = grain.checkpoint.CheckpointSave(data_iter)
    self._saving = step
    try:
      started = self._manager.save(step, args=ocp.args.Composite(**items), force=force)
    except Exception as e:  # pylint: disable=broad-except
      self._saving = None
      raise self._failed(step, e) from e
    if not started:
      self._saving = None
    elif not self._cfg.async_save:
      self.wait()
    return started

  def _verified_latest(self) -> int | None:
    """The newest step that verifies; newer ones are quarantined with a warning.

    Process 0 reads and hashes; the other processes learn its answer, so every
    process restores the same step.
    """
    self.wait()
    steps = self.all_steps()
    good = -1
    if jax.process_index() == 0:
      for step in reversed(steps):
        problem = self._check(step, steps)
        if problem is None:
          good = step
          break
        self._quarantine(step, problem)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      good = int(multihost_utils.broadcast_one_to_all(np.int32(good)))
      multihost_utils.sync_global_devices('lattice_checkpoint_verified')
    if any(s > good for s in steps):
      self._manager.reload()
      # Still listed above the good step: corrupt and not movable; never use them.
      self._skipped |= {s for s in self._manager.all_steps() if s > good}
    return None if good < 0 else good

  def _check(self, step: int, steps: list[int]) -> str | None:
    """`verify`, except that a folder sealed nowhere (written before lattice sealed
    its checkpoints) is trusted to Orbax's commit, with a warning. Where some step
    is sealed, a step without a seal has lost it: corrupt."""
    problem = verify(self.directory / str(step))
    if problem is not None and not (self.directory / str(step) / MANIFEST).exists():
      if not any((self.directory / str(s) / MANIFEST).exists() for s in steps):
        logging.warning('checkpoint: step %d in %s has no %s (saved before lattice '
                        'sealed checkpoints); trusting Orbax\'s commit marker',
                        step, self.directory, MANIFEST)
        return None
    return problem

  def _quarantine(self, step: int, problem: str) -> None:
    target = self.directory / QUARANTINE / str(step)
    n = 1
    while target.exists():
      target, n = self.directory / QUARANTINE / f'{step}.{n}', n + 1
    try:
      target.parent.mkdir(parents=True, exist_ok=True)
      (self.directory / str(step)).rename(target)
    except OSError as e:  # e.g. an object store without folder renames
      logging.warning('checkpoint: step %d in %s is corrupt: %s; skipped it, but could '
                      'not move it aside (%s): delete it by hand', step, self.directory,
                      problem, e)
      return
    logging.warning('checkpoint: step %d in %s is corrupt: %s; moved it to %s and '
                    'skipped it', step, self.directory, problem, target)

  def resume(self, state_like: Any,
             data_iter: grain.DatasetIterator | None = None) -> Any | None:
    """Restores the newest checkpoint that verifies, or returns None if there is none.

    Corrupt steps are skipped (and moved aside) with a warning naming each.
    """
    step = self._verified_latest()
    if step is None:
      return None
    return self.restore(state_like, data_iter, step=step, verified=True)

  def restore(self, state_like: Any, data_iter: grain.DatasetIterator | None = None,
              step: int | None = None, *, verified: bool = False) -> Any:
    """Returns the state saved at `step` on `state_like`'s shardings.

    `step=None` means the newest step that verifies (see `resume`). `state_like`
    is a pytree of `jax.ShapeDtypeStruct`s with `.sharding` (or of concrete
    arrays, whose shardings are used). `data_iter`, when given, is moved in place
    to the saved position. A step that does not match its manifest raises
    CorruptCheckpointError.
    """
    self.wait()
    if step is None:
      step = self._verified_latest()
      if step is None:
        raise FileNotFoundError(f'checkpoint: no checkpoint to restore in '
                                f'{self.directory}')
      verified = True
    elif step not in self.all_steps():
      raise FileNotFoundError(f'checkpoint: no step {step} in {self.directory} '
                              f'(saved steps: {self.all_steps()})')
    if not verified:
      problem = self._check(step, self.all_steps())
      if problem is not None:
        raise CorruptCheckpointError(f'checkpoint: step {step} in {self.directory} '
                                     f'is corrupt: {problem}')
    items = {_STATE: ocp.args.StandardRestore(jax.tree.map(_abstract, state_like))}
    if data_iter is not None:
      if not (self.directory / str(step) / _DATA).exists():
        raise FileNotFoundError(f'checkpoint: step {step} in {self.directory} holds no '
                                f'data iterator state (it was saved without one)')
      items[_DATA] = grain.checkpoint.CheckpointRestore(data_iter)
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(**items))
    except ValueError as e:
      if 'process_' not in str(e):
        raise
      # grain names the missing per-process file; say why that happens.
      raise ValueError(f'checkpoint: cannot restore step {step} from '
                       f'{self.directory}: {e} (a data iterator saved by a run with a '
                       f'different process count cannot be restored)') from e
    return restored[_STATE]

  def wait(self) -> None:
    """Blocks until every started save is on disk; CheckpointError if one failed."""
    try:
      self._manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      step, self._saving = self._saving, None
      raise self._failed(step, e) from e
    self._saving = None

  def close(self) -> None:
    try:
      self.wait()
    finally:
      self._manager.close()

  def __enter__(self) -> Checkpointer:
    return self

  def __exit__(self, *exc: Any) -> None:
    self.close()

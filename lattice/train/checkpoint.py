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
and removes at the next start. On top of that, each step is sealed
just before the commit with `lattice_manifest.json`: the size and a digest of every
file in it (lattice/train/seal.py: the store's own checksums from one listing on
GCS; on a local or NFS folder sha256s split over the processes, each hashing 1/n of
the files once all writes are done). A restore verifies the seal of the step it is
about to load (sizes of every file, digests split over the processes again); a
truncated, tampered or unsealed step is
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
from lattice.train.seal import MANIFEST, verify, write_manifest, write_part  # pylint: disable=unused-import

_STATE, _DATA = 'state', 'data'
QUARANTINE = 'corrupt'
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
        async_options=ocp.AsyncOptions(post_finalization_callback=self._seal,
                                       barrier_sync_fn=self._barrier_fn()),
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

  def _barrier_fn(self):
    """Orbax's barrier between processes, with the seal's hashing hooked in: once
    every process's writes are done ('async_write_complete'), each process hashes
    its share of a local step into a part, and they meet again before process 0
    seals (seal.py). One process, or a bucket with checksums: Orbax's own."""
    if jax.process_count() == 1 or storage.is_remote(self.directory):
      return None
    from orbax.checkpoint import multihost  # pylint: disable=g-import-not-at-top
    barrier = multihost.get_barrier_sync_fn()

    def sync(*, key: str, timeout_ms: int) -> None:
      barrier(key=key, timeout_ms=timeout_ms)
      if 'async_write_complete' in key and self._saving is not None:
        write_part(self._in_flight_dir(self._saving), jax.process_index(),
                   jax.process_count())
        barrier(key=f'{key}.lattice_seal_parts', timeout_ms=timeout_ms)
    return sync

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

    Process 0 proposes the steps, newest first; every process checks the step's
    files' sizes and the digests of its share (seal.verify), and the step is good
    only if every share is, so every process restores the same step.
    """
    self.wait()
    steps = self.all_steps()
    index, count = jax.process_index(), jax.process_count()
    candidates = list(reversed(steps)) if index == 0 else []
    good = -1
    while True:
      step = candidates.pop(0) if candidates else -1
      if count > 1:
        from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
        step = int(multihost_utils.broadcast_one_to_all(np.int32(step)))
      if step < 0:
        break
      problem = self._check(step, steps, index, count)
      bad = [problem is not None]
      if count > 1:
        bad = list(np.asarray(multihost_utils.process_allgather(np.int32(bad[0]))).ravel())
      if not any(bad):
        good = step
        break
      if index == 0:
        if problem is None:
          flagged = [i for i, b in enumerate(bad) if b]
          problem = (f'a file in the share of process(es) {flagged} does not match '
                     'its sha256 (see their logs)')
        self._quarantine(step, problem)
      elif problem is not None:
        logging.warning('checkpoint: step %d in %s is corrupt: %s', step,
                        self.directory, problem)
    if count > 1:
      multihost_utils.sync_global_devices('lattice_checkpoint_verified')
    if any(s > good for s in steps):
      self._manager.reload()
      # Still listed above the good step: corrupt and not movable; never use them.
      self._skipped |= {s for s in self._manager.all_steps() if s > good}
    return None if good < 0 else good

  def _check(self, step: int, steps: list[int], index: int = 0,
             count: int = 1) -> str | None:
    """`verify`, except that a folder sealed nowhere (written before lattice sealed
    its checkpoints) is trusted to Orbax's commit, with a warning. Where some step
    is sealed, a step without a seal has lost it: corrupt."""
    problem = verify(self.directory / str(step), index, count)
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
      source = self.directory / str(step)
      if storage.is_remote(source):
        # An object store has no folders to rename: copy every object of the step
        # under corrupt/ and delete the originals (gcsfs: copy, then delete).
        fs, src = fsspec.core.url_to_fs(os.fspath(source))
        fs.mv(src, fsspec.core.url_to_fs(os.fspath(target))[1], recursive=True)
        storage.invalidate_listings(source)
      else:
        target.parent.mkdir(parents=True, exist_ok=True)
        source.rename(target)
    except OSError as e:  # e.g. a store refusing the copy
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

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
"""

from __future__ import annotations

import os
from typing import Any

from absl import logging
from etils import epath
import grain
import jax
import orbax.checkpoint as ocp

from lattice import config as config_lib

_STATE, _DATA = 'state', 'data'


def _abstract(leaf: Any) -> Any:
  """Concrete jax Arrays -> ShapeDtypeStructs carrying their shardings."""
  if isinstance(leaf, jax.Array):
    return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=leaf.sharding)
  return leaf


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
    options = ocp.CheckpointManagerOptions(
        max_to_keep=cfg.keep,
        save_interval_steps=cfg.every,
        enable_async_checkpointing=cfg.async_save,
        create=True,
    )
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def save(self, step: int, state: Any, data_iter: grain.DatasetIterator | None = None,
           *, force: bool = False) -> bool:
    """Starts saving `state` (and `data_iter`'s position) at `step`.

    Returns whether a save started: False when checkpointing is disabled, `step`
    is not a multiple of `cfg.every` (unless `force`), or `step` is not newer
    than the latest checkpoint (e.g. the final save of a run that just resumed).
    """
    if not self._cfg.enabled:
      return False
    latest = self.latest_step()
    if latest is not None and step <= latest:
      logging.info('checkpoint: step %d not newer than saved step %d; skipped',
                   step, latest)
      return False
    items = {_STATE: ocp.args.StandardSave(state)}
    if data_iter is not None:
      items[_DATA] = grain.checkpoint.CheckpointSave(data_iter)
    return self._manager.save(step, args=ocp.args.Composite(**items), force=force)

  def restore(self, state_like: Any, data_iter: grain.DatasetIterator | None = None,
              step: int | None = None) -> Any:
    """Returns the state saved at `step` (default: latest) on `state_like`'s shardings.

    `state_like` is a pytree of `jax.ShapeDtypeStruct`s with `.sharding` (or of
    concrete arrays, whose shardings are used). `data_iter`, when given, is moved
    in place to the saved position.
    """
    self.wait()
    if step is None:
      step = self.latest_step()
      if step is None:
        raise FileNotFoundError(f'checkpoint: no checkpoint to restore in '
                                f'{self.directory}')
    elif step not in self.all_steps():
      raise FileNotFoundError(f'checkpoint: no step {step} in {self.directory} '
                              f'(saved steps: {self.all_steps()})')
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
    """Blocks until every started save is on disk."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()

  def __enter__(self) -> Checkpointer:
    return self

  def __exit__(self, *exc: Any) -> None:
    self.close()

"""A run directory's config and params, read without building a model or a loop.

`config.json` (the typed, resolved Config that `train_and_evaluate` writes) and the
params of a checkpoint: what `train.init_from=RUN` (fine-tuning an imported model),
the reshaped-workdir check and `lattice.train.artifacts.load_run` need. Nothing here
imports the train loop, so the loop can use it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from etils import epath
import orbax.checkpoint as ocp

from lattice import config as config_lib
from lattice import storage
from lattice.train import checkpoint
from lattice.train.recorder import CONFIG_FILE

MAX_DEPTH = 3  # how deep under a workdir runs are looked for (<arm>/seed_<k>: 2)


def load_config(workdir: str | os.PathLike) -> config_lib.Config:
  path = storage.path(workdir) / CONFIG_FILE
  if not path.is_file():
    raise FileNotFoundError(f'{path}: no such file; is {workdir} a lattice training '
                            f'directory (written by lattice.train.loop)?')
  return config_lib.build(json.loads(path.read_text()))


def with_model_of(cfg: config_lib.Config, run: str | os.PathLike) -> config_lib.Config:
  """`cfg` with the model section of the run in `run` (train.init_from), and that
  run's tokenizer when `cfg` leaves `data.tokenizer` at its default (byte): a model
  reads the ids of the tokenizer it was trained or imported with."""
  path = storage.path(run) / CONFIG_FILE
  if not path.is_file():
    raise config_lib.ConfigError(f'train.init_from: {path} does not exist (expected a '
                                 f'lattice run, e.g. from `lattice convert hf`)')
  source = load_config(run)
  data = cfg.data
  if (data.tokenizer or 'byte') == 'byte':
    data = dataclasses.replace(data, tokenizer=source.data.tokenizer)
  try:
    return config_lib.validate(dataclasses.replace(cfg, model=source.model, data=data))
  except config_lib.ConfigError as e:
    raise config_lib.ConfigError(f'train.init_from: the model of {run} does not fit '
                                 f'this config: {e}') from None


def load_params(run: str | os.PathLike, abstract_params: Any, step: int | None = None
                ) -> Any:
  """The params of the run in `run` (latest step by default), restored onto the
  shapes, dtypes and shardings of `abstract_params` (ShapeDtypeStructs); the rest of
  its train state (optimizer, step) is not read."""
  directory = storage.absolute(run) / 'checkpoints'
  steps = sorted(int(p.name) for p in directory.glob('*') if p.name.isdigit()) \
      if directory.is_dir() else []
  if not steps or (step is not None and step not in steps):
    raise config_lib.ConfigError(f'train.init_from: no checkpoint'
                                 f'{"" if step is None else f" at step {step}"} in '
                                 f'{directory}')
  step_dir = directory / str(steps[-1] if step is None else step)
  problem = checkpoint.verify(step_dir)
  if problem is not None:
    raise checkpoint.CorruptCheckpointError(f'train.init_from: {step_dir}: {problem}')
  item = {'params': abstract_params}
  with ocp.PyTreeCheckpointer() as ckptr:
    restored = ckptr.restore(step_dir / 'state', args=ocp.args.PyTreeRestore(
        item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item),
        partial_restore=True))
  return restored['params']


def _has_checkpoint(run: epath.Path) -> bool:
  ckpt = run / 'checkpoints'
  return ckpt.is_dir() and any(p.name.isdigit() for p in ckpt.iterdir())


def find_runs(workdir: str | os.PathLike[str]) -> dict[str, epath.Path]:
  """Model id -> run folder for every folder under `workdir` holding a checkpoint:
  the workdir itself (id: its name) or `<arm>/seed_<k>` below it (id: the path)."""
  root = storage.path(workdir)  # local or gs://
  if _has_checkpoint(root):
    return {root.name: root}
  found: dict[str, epath.Path] = {}
  frontier = [root] if root.is_dir() else []
  for _ in range(MAX_DEPTH):
    frontier = [c for d in frontier for c in sorted(d.iterdir()) if c.is_dir()
                and c.name != 'checkpoints']
    for d in frontier:
      if _has_checkpoint(d):
        found[d.relative_to(root).as_posix()] = d
    frontier = [d for d in frontier if not _has_checkpoint(d)]
  return found

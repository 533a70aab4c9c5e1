"""A training run's directory as an artifact: its config and its trained weights.

`train_and_evaluate` writes `config.json` (the typed, resolved Config) beside
`checkpoints/`; `load_run(workdir)` gives back (Config, params) for inference,
export (lattice.quant.inference.pack_model) or serving, without the experiment file.
`train.init_from=RUN` starts a fresh run from RUN's model and params
(`with_model_of`, `load_params`), e.g. to fine-tune an imported checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from lattice import config as config_lib

CONFIG_FILE = 'config.json'


def save_config(workdir: str | os.PathLike, cfg: config_lib.Config) -> None:
  (Path(workdir) / CONFIG_FILE).write_text(json.dumps(dataclasses.asdict(cfg), indent=1))


def load_config(workdir: str | os.PathLike) -> config_lib.Config:
  path = Path(workdir) / CONFIG_FILE
  if not path.is_file():
    raise FileNotFoundError(f'{path}: no such file; is {workdir} a lattice training '
                            f'directory (written by lattice.train.loop)?')
  return config_lib.build(json.loads(path.read_text()))


def load_run(workdir: str | os.PathLike, step: int | None = None
             ) -> tuple[config_lib.Config, Any]:
  """(Config, params) of the run in `workdir` at `step` (default: the latest)."""
  from lattice.train import checkpoint, loop
  cfg = load_config(workdir)
  setup = loop.build(cfg)
  with checkpoint.Checkpointer(Path(workdir) / 'checkpoints', cfg.checkpoint) as ckpt:
    state = ckpt.restore(setup.abstract_state, step=step)
  return setup.cfg, state.params


def with_model_of(cfg: config_lib.Config, run: str | os.PathLike) -> config_lib.Config:
  """`cfg` with the model section of the run in `run` (train.init_from)."""
  path = Path(run) / CONFIG_FILE
  if not path.is_file():
    raise config_lib.ConfigError(f'train.init_from: {path} does not exist (expected a '
                                 f'lattice run, e.g. from `lattice convert hf`)')
  model = load_config(run).model
  try:
    return config_lib.validate(dataclasses.replace(cfg, model=model))
  except config_lib.ConfigError as e:
    raise config_lib.ConfigError(f'train.init_from: the model of {run} does not fit '
                                 f'this config: {e}') from None


def load_params(run: str | os.PathLike, abstract_params: Any, step: int | None = None
                ) -> Any:
  """The params of the run in `run` (latest step by default), restored onto the
  shapes, dtypes and shardings of `abstract_params` (ShapeDtypeStructs); the rest of
  its train state (optimizer, step) is not read."""
  import orbax.checkpoint as ocp
  from lattice.train import checkpoint
  directory = Path(run).absolute() / 'checkpoints'
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

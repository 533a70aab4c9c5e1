"""A training run's directory as an artifact: its config and its trained weights.

`train_and_evaluate` writes `config.json` (the typed, resolved Config) beside
`checkpoints/`; `load_run(workdir)` gives back (Config, params) for inference,
export (lattice.quant.inference.pack_model) or serving, without the experiment file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from lattice import config as config_lib
from lattice.train import checkpoint, loop
from lattice.train.recorder import CONFIG_FILE, save_config  # pylint: disable=unused-import


def load_config(workdir: str | os.PathLike) -> config_lib.Config:
  path = Path(workdir) / CONFIG_FILE
  if not path.is_file():
    raise FileNotFoundError(f'{path}: no such file; is {workdir} a lattice training '
                            f'directory (written by lattice.train.loop)?')
  return config_lib.build(json.loads(path.read_text()))


def load_run(workdir: str | os.PathLike, step: int | None = None
             ) -> tuple[config_lib.Config, Any]:
  """(Config, params) of the run in `workdir` at `step` (default: the latest)."""
  cfg = load_config(workdir)
  setup = loop.build(cfg)
  with checkpoint.Checkpointer(Path(workdir) / 'checkpoints', cfg.checkpoint) as ckpt:
    state = ckpt.restore(setup.abstract_state, step=step)
  return setup.cfg, state.params

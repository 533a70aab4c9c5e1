"""A training run's directory as an artifact: its config and its trained weights.

`train_and_evaluate` writes `config.json` (the typed, resolved Config) beside
`checkpoints/`; `load_run(workdir)` gives back (Config, params) for inference,
export (lattice.quant.inference.pack_model) or serving, without the experiment file.
`train.init_from=RUN` starts a fresh run from RUN's model and params
(`with_model_of`, `load_params`), e.g. to fine-tune an imported checkpoint.
"""

from __future__ import annotations

import os
from typing import Any

from lattice import config as config_lib
from lattice import storage
from lattice.train import checkpoint, loop
from lattice.train.recorder import CONFIG_FILE, save_config  # pylint: disable=unused-import
from lattice.train.rundir import load_config

__all__ = ['CONFIG_FILE', 'load_config', 'load_run', 'save_config']


def load_run(workdir: str | os.PathLike, step: int | None = None
             ) -> tuple[config_lib.Config, Any]:
  """(Config, params) of the run in `workdir` at `step` (default: the latest)."""
  cfg = load_config(workdir)
  setup = loop.build(cfg)
  with checkpoint.Checkpointer(storage.path(workdir) / 'checkpoints', cfg.checkpoint) as ckpt:
    state = ckpt.restore(setup.abstract_state, step=step)
  return setup.cfg, state.params



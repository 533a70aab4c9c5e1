"""`lattice eval --workdir=RUN`: the run's configured eval sets on its checkpoint.

  lattice eval --workdir=runs/spm                 one training run
  lattice eval --workdir=runs/baseline            every <arm>/seed_<k> run below it
  lattice eval --workdir=runs/spm --step 12 --eval-batches 16

Each run is restored from its `config.json` and checkpoint (the latest, or
`--step`), and evaluated exactly as the train loop evaluates it (`loop.evaluate`
on `lattice.data.batches.make_eval_batches`: the `data.eval` corpus, or the default
hash split of the training source), so the numbers are the training eval's:
val_loss (nats/token), val_ppl (per token) and val_bpb (bits per UTF-8 byte of the
targets' text). They are printed, one line per run, and written to
`RUN/eval.json` with the step and the eval source. When the runs belong to an
experiment (a `result.json` in the workdir, or one or two folders above a single
run: `<experiment>/<arm>/seed_<k>`), the rows are also added to that `result.json`
(`evals`, one row per run and eval set; re-evaluating replaces the row) and its
`table.md`, so `lattice report` shows them next to the training metrics.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from typing import Any

from lattice import config as config_lib
from lattice import storage
from lattice import sharding
from lattice.data import batches as batches_lib
from lattice.data import mixture
from lattice.data import tokenizer as tokenizer_lib
from lattice.run import records
from lattice.train import checkpoint, loop, rundir

EVAL_FILE = 'eval.json'


def evaluate_run(run: str | os.PathLike[str], *, step: int | None = None,
                 eval_batches: int | None = None) -> dict[str, Any]:
  """Evaluates the training run in `run` (a folder with config.json and checkpoints).

  Args:
    run: the run folder.
    step: the checkpoint step (default: the latest).
    eval_batches: overrides the run's `data.eval_batches` (> 0).

  Returns:
    {'step', 'val_loss', 'val_ppl', 'val_bpb', ..., 'eval': the eval source}; also
    written to `run/eval.json`.

  Raises:
    ConfigError: `run` holds no config.json, or `eval_batches` is not positive.
  """
  run = storage.path(run)
  if not (run / rundir.CONFIG_FILE).is_file():
    raise config_lib.ConfigError(f'--workdir: {run / rundir.CONFIG_FILE} does not exist; '
                                 f'is {run} a lattice training run?')
  cfg = rundir.load_config(run)
  if eval_batches is not None:
    if eval_batches <= 0:
      raise config_lib.ConfigError(f'--eval-batches: must be > 0, got {eval_batches}')
    cfg = config_lib.replace(cfg, **{'data.eval_batches': eval_batches})
  tok = tokenizer_lib.make_tokenizer(cfg.data.tokenizer)
  setup = loop.build(cfg)  # the mesh the run trained on (config.mesh, all devices)
  try:
    with checkpoint.Checkpointer(run / 'checkpoints', setup.cfg.checkpoint) as ckpt:
      state = ckpt.restore(setup.abstract_state, step=step)
  except Exception as e:  # pylint: disable=broad-except  (one line, as lattice serve)
    first = str(e).splitlines()[0] if str(e) else ''
    raise config_lib.ConfigError(f'--step: cannot restore {run}'
                                 f'{"" if step is None else f" at step {step}"}: '
                                 f'{type(e).__name__}: {first}') from None
  batches = batches_lib.make_eval_batches(setup.cfg, tok)
  if not batches:
    raise config_lib.ConfigError('data.eval_batches: the run evaluates 0 batches; '
                                 'pass --eval-batches N')
  with sharding.use_mesh(setup.mesh):
    metrics = loop.evaluate(setup, state, batches)
  out = {'step': int(state.step), **metrics, 'eval_batches': len(batches),
         'eval': _describe(setup.cfg)}
  (run / EVAL_FILE).write_text(json.dumps(out, indent=1))
  return out


def _describe(cfg: config_lib.Config) -> dict[str, Any]:
  """The eval corpus: its source, paths and split (`data.eval` is read whole)."""
  if cfg.data.source in batches_lib.BATCH_SOURCES:
    return {'source': cfg.data.source, 'split': 'validation'}
  eval_cfg, split = mixture.eval_config(cfg.data)
  return {'source': eval_cfg.source, 'paths': list(eval_cfg.paths), 'split': split,
          'tokenizer': cfg.data.tokenizer}


def _relative(run: os.PathLike[str], root: os.PathLike[str]) -> str:
  run_s, root_s = os.fspath(run).rstrip('/'), os.fspath(root).rstrip('/')
  return run_s[len(root_s):].strip('/') or '.'


def record(workdir: str | os.PathLike[str], rows: dict[str, dict[str, Any]]
           ) -> Any | None:
  """Adds eval rows ({run folder: evaluate_run output}) to the experiment's
  result.json and table.md (records.add_evals) and returns that folder; None when
  no result.json is found in `workdir` or the two folders above it (a bare run)."""
  root = storage.path(workdir)
  for folder in (root, root.parent, root.parent.parent):
    if (folder / records.RESULT_FILE).is_file():
      break
  else:
    return None
  try:
    result = records.Result.load(folder)
  except ValueError as e:
    raise config_lib.ConfigError(f'--workdir: cannot add the eval to {e}') from None
  added = [{'run': _relative(run, folder), **row} for run, row in rows.items()]
  records.add_evals(result, added).write(folder)
  return folder


def main(argv: Sequence[str]) -> None:
  """`lattice eval --workdir DIR [--step S] [--eval-batches N]`; user errors raise
  ConfigError (the CLI prints one line and exits 2)."""
  parser = argparse.ArgumentParser(prog='lattice eval', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--workdir', required=True, help='a training run, or an '
                      'experiment workdir whose <arm>/seed_<k> runs are all evaluated')
  parser.add_argument('--step', type=int, default=None, help='checkpoint step '
                      '(default: the latest)')
  parser.add_argument('--eval-batches', type=int, default=None,
                      help="batches to evaluate (default: the run's data.eval_batches)")
  args = parser.parse_args(list(argv))
  runs = rundir.find_runs(args.workdir)
  if not runs:
    raise config_lib.ConfigError(f'--workdir: no checkpoint in {args.workdir} or in '
                                 f'its <arm>/seed_<k> folders')
  rows = {}
  for name, run in runs.items():
    m = evaluate_run(run, step=args.step, eval_batches=args.eval_batches)
    rows[run] = m
    print(f'{name} step {m["step"]}: val_loss={m["val_loss"]:.4f} '
          f'val_ppl={m["val_ppl"]:.3f} val_bpb={m["val_bpb"]:.4f} '
          f'({m["eval_batches"]} batches) -> {run / EVAL_FILE}')
  folder = record(args.workdir, rows)
  if folder is not None:
    print(f'added {len(rows)} eval rows to {folder / records.RESULT_FILE}')


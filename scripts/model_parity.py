"""Fixed-seed losses of a list of model configs, to check a refactor preserves them.

For each config: init with seed 0, 3 train steps on the config's own first batches,
then one eval over 2 eval batches. Prints the numbers as JSON; `--write` saves them
as the reference (scripts/model_parity_reference.json), `--check` compares with the
reference at 1e-6 relative tolerance and exits 1 on any difference. The reference
remembers the commit each case was written at (`_meta`), and `--check` prints it.

  PYTHONPATH=$PWD python scripts/model_parity.py --check
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

import jax

from lattice import config as config_lib
from lattice import sharding
from lattice.data import tokenizer as tokenizer_lib
from lattice.train import loop

REFERENCE = Path(__file__).with_name('model_parity_reference.json')
RTOL = 1e-6
STEPS = 3

BASE = {
    'model.d_model': 32, 'model.n_layers': 2, 'model.attention.n_heads': 2,
    'model.max_len': 64, 'data.seq_len': 32, 'data.batch_size': 4,
    'data.eval_batches': 2, 'optimizer.warmup_steps': 1, 'train.steps': 10,
    'mesh.data': 1,
}
MM = {'model.frontend.image_size': 16, 'model.frontend.patch_size': 8,
      'data.seq_len': 64, 'model.max_len': 128,
      'model.frontend.max_images': 2}
MOE = {'model.ffn.kind': 'moe', 'model.ffn.n_experts': 4, 'model.ffn.top_k': 2}
CASES = {
    'float_dense': {},
    'bitnet_dense': {'model.linear.kind': 'bitnet'},
    'quest_dense': {'model.linear.kind': 'quest', 'model.linear.w_bits': 3},
    'float_moe': {**MOE, 'model.ffn.aux_loss': 0.01, 'model.ffn.bias_rate': 1e-3},
    'bitnet_moe': {**MOE, 'model.linear.kind': 'bitnet'},
    'quest_moe': {**MOE, 'model.linear.kind': 'quest'},
    'moe_sigmoid_capacity': {**MOE, 'model.ffn.router': 'sigmoid',
                             'model.ffn.dispatch': 'capacity'},
    'mtp_parallel': {'model.mtp.kind': 'parallel', 'model.mtp.n': 3},
    'mtp_parallel_memeff': {'model.mtp.kind': 'parallel', 'model.mtp.n': 2,
                            'model.mtp.memory_efficient': True},
    'mtp_sequential': {'model.mtp.kind': 'sequential', 'model.mtp.depth': 2,
                       'model.mtp.lam_switch_step': 2},
    'mtp_parallel_moe': {**MOE, 'model.mtp.kind': 'parallel', 'model.mtp.n': 2},
    'early': {**MM, 'model.frontend.kind': 'early'},
    'early_discrete': {**MM, 'model.frontend.kind': 'early',
                       'model.frontend.image_tokens': 'discrete',
                       'model.frontend.codebook_size': 16,
                       'model.frontend.image_loss': 0.5},
    'late': {**MM, 'model.frontend.kind': 'late', 'model.frontend.enc_d_model': 16},
    'early_moe_hard': {**MM, **MOE, 'model.frontend.kind': 'early',
                       'model.ffn.router': 'modality'},
}


def config_of(overrides: dict) -> config_lib.Config:
  """The case's typed config (base + overrides)."""
  cfg = config_lib.replace(config_lib.Config(), **{**BASE, **overrides})
  if overrides.get('model.frontend.kind', 'text') != 'text':
    try:  # image+text batches are the data source 'shapes' (before: the family's)
      cfg = config_lib.replace(cfg, **{'data.source': 'shapes'})
    except config_lib.ConfigError:
      pass
  return cfg


def run_case(overrides: dict) -> dict:
  """Train losses of STEPS steps and the eval metrics after them."""
  cfg = config_of(overrides)
  setup = loop.build(cfg)
  train_iter, eval_batches = loop.make_data(setup.cfg, tokenizer_lib.ByteTokenizer())
  with sharding.use_mesh(setup.mesh):
    state = setup.init(jax.random.key(0))
    losses = []
    for _ in range(STEPS):
      state, m = setup.train_step(state, sharding.global_batch(next(train_iter), setup.mesh))
      losses.append(float(m['loss']))
  ev = loop.evaluate(setup, state, eval_batches[:2])
  return {'train_loss': losses, **{k: v for k, v in ev.items()
                                   if isinstance(v, float)}}


def _commit() -> str:
  """HEAD's short hash, "+dirty" when tracked files have uncommitted changes."""
  def git(*args):
    return subprocess.run(['git', *args], cwd=REFERENCE.parent, capture_output=True,
                          text=True, check=False).stdout.strip()
  head = git('rev-parse', '--short', 'HEAD') or 'unknown'
  return head + ('+dirty' if git('status', '--porcelain', '--untracked-files=no') else '')


def _close(a, b) -> bool:
  if isinstance(a, list):
    return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
  return math.isclose(a, b, rel_tol=RTOL, abs_tol=1e-9)


def main(argv: list[str]) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--write', action='store_true')
  p.add_argument('--check', action='store_true')
  p.add_argument('cases', nargs='*')
  args = p.parse_args(argv)
  names = args.cases or list(CASES)
  out = {name: run_case(CASES[name]) for name in names}
  print(json.dumps(out, indent=1))
  if args.write:  # named cases update the reference; none rewrites it
    ref = json.loads(REFERENCE.read_text()) if args.cases and REFERENCE.exists() else {}
    meta = {**ref.get('_meta', {}), **{name: _commit() for name in out}}
    REFERENCE.write_text(json.dumps({**ref, **out, '_meta': meta}, indent=1) + '\n')
  if args.check:
    ref = json.loads(REFERENCE.read_text())
    for n in names:
      print(f'{n}: reference written at {ref.get("_meta", {}).get(n, "an unrecorded commit")}')
    bad = [n for n in names if n not in ref or set(ref[n]) - set(out[n])
           or not all(_close(ref[n][k], out[n][k]) for k in ref[n])]
    for n in bad:
      print(f'MISMATCH {n}: reference {ref.get(n)} now {out[n]}', file=sys.stderr)
    print(f'{len(names) - len(bad)}/{len(names)} cases match the reference '
          f'(rtol {RTOL})')
    return 1 if bad else 0
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))

r"""Seeds trained together (one vmapped step) against seeds trained one after another.

  python -m benchmarks.seed_vmap [--seeds 3] [--widths 32,64,128] [--json out.json]

For each model width, builds the train step of `lattice.train.loop.build` (sequential:
one jitted step per seed, S calls per batch, as S separate runs would do) and of
`lattice.train.vmap_seeds.build` (one jitted `vmap(train_step)` over the S stacked
states per batch). After a compile+warmup call each, the two are timed round-robin on
the same batches (so load on a shared machine hits them alike), `--steps` steps per
repeat, and the median of `--repeats` repeats is kept. Prints the step time of both and
`speedup` = sequential / vmapped, which is what `lattice sweep --vmap-seeds` gains per
step (compilation, evaluation and checkpoints are extra and also shared by vmap).
`--json PATH` writes the rows.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import numpy as np

from lattice import config as config_lib
from lattice import sharding
from lattice.train import flops, loop, vmap_seeds


def make_config(d_model: int, n_layers: int, seq_len: int, batch: int,
                ffn: str) -> config_lib.Config:
  return config_lib.build({
      'model': {'d_model': d_model, 'n_layers': n_layers, 'max_len': seq_len,
                'attention': {'n_heads': max(d_model // 16, 2)}, 'ffn': {'kind': ffn}},
      'data': {'seq_len': seq_len, 'batch_size': batch},
      'train': {'steps': 10_000, 'progress': False, 'flops_peak': 1.0},
      'mesh': {'data': 1},
  })


def bench_width(d_model: int, args) -> dict:
  cfg = make_config(d_model, args.layers, args.seq_len, args.batch, args.ffn)
  devices = jax.devices()[:1]
  seq = loop.build(cfg, devices=devices)
  _, fns = vmap_seeds.build(cfg, args.seeds, devices=devices)
  rng = np.random.default_rng(0)
  batches = [{'inputs': rng.integers(0, 256, (args.batch, args.seq_len), np.int32),
              'targets': rng.integers(0, 256, (args.batch, args.seq_len), np.int32),
              'weights': np.ones((args.batch, args.seq_len), np.float32)}
             for _ in range(args.steps)]
  with sharding.use_mesh(seq.mesh):
    batches = [sharding.global_batch(b, seq.mesh) for b in batches]
    states = [seq.init(jax.random.key(s)) for s in range(args.seeds)]
    stacked = fns['init'](jax.vmap(jax.random.key)(np.arange(args.seeds, dtype=np.uint32)))

    def run_seq():
      nonlocal states
      for b in batches:
        outs = [seq.train_step(st, b) for st in states]
        states = [o[0] for o in outs]
      jax.block_until_ready(states)

    def run_vmap():
      nonlocal stacked
      for b in batches:
        stacked, _ = fns['train_step'](stacked, b)
      jax.block_until_ready(stacked)

    run_seq()
    run_vmap()
    t_seq, t_vmap = [], []
    for _ in range(args.repeats):
      t0 = time.perf_counter()
      run_seq()
      t1 = time.perf_counter()
      run_vmap()
      t2 = time.perf_counter()
      t_seq.append((t1 - t0) / args.steps)
      t_vmap.append((t2 - t1) / args.steps)
  params = flops.count_params(states[0].params)
  seq_s, vmap_s = statistics.median(t_seq), statistics.median(t_vmap)
  return {'d_model': d_model, 'params': params, 'seeds': args.seeds,
          'sequential_step_s': seq_s, 'vmapped_step_s': vmap_s,
          'speedup': seq_s / vmap_s}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--seeds', type=int, default=3)
  parser.add_argument('--widths', default='32,64,128')
  parser.add_argument('--layers', type=int, default=2)
  parser.add_argument('--seq_len', type=int, default=128)
  parser.add_argument('--batch', type=int, default=16)
  parser.add_argument('--ffn', default='dense', choices=('dense', 'moe'))
  parser.add_argument('--steps', type=int, default=10)
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--json', default=None)
  args = parser.parse_args(argv)
  rows = []
  print(f'{jax.devices()[0].device_kind} ({jax.default_backend()}), {args.seeds} seeds, '
        f'{args.layers} layers, {args.ffn} FFN, batch {args.batch} x {args.seq_len}')
  for width in map(int, args.widths.split(',')):
    row = bench_width(width, args)
    rows.append(row)
    print(f'd_model {width:4d} ({row["params"] / 1e6:.2f}M params): sequential '
          f'{row["sequential_step_s"] * 1e3:7.1f} ms/step, vmapped '
          f'{row["vmapped_step_s"] * 1e3:7.1f} ms/step -> speedup {row["speedup"]:.2f}x')
  if args.json:
    with open(args.json, 'w') as f:
      json.dump({'rows': rows, 'device': jax.devices()[0].device_kind,
                 'backend': jax.default_backend(), 'settings': vars(args)}, f, indent=1)


if __name__ == '__main__':
  main()

r"""Gradient accumulation: compiled step memory and throughput vs microbatches.

  python -m benchmarks.accumulation [--microbatches 1,2,4,8] [--d_model 256]
      [--batch 32] [--seq_len 256] [--dtype auto] [--json out.json]

At one global batch, compiles the train step (`lattice/train/step.py`, the one
`train_and_evaluate` uses) once per `train.microbatches` M, reads the compiled
step's `memory_analysis()` (temporaries: activations and the gradient
accumulator) and times steps on a synthetic batch. Key figures, measured in this
process: `temp_ratio` = temporaries at the largest M / at M = 1 (below 1: memory
falls) and `time_ratio` = step time at the largest M / at M = 1 (the price of
running the microbatches in sequence). `--json PATH` writes {"rows": [{"microbatches",
"temp_bytes", "step_s", "tokens_per_s", "mfu", "mfu_measured"}, ...], "temp_ratio",
"time_ratio", "device", "backend", "dtype"}; MFU as in `lattice.train.recorder`
(chip's published peak where listed, else the timed matmul).
"""

from __future__ import annotations

import argparse
import json
import time

import jax

from lattice import config as config_lib
from lattice import sharding
from lattice.train import flops, loop

from benchmarks import train_throughput


def measure(cfg: config_lib.Config, steps: int, devices) -> dict:
  """Compiled temp bytes, seconds per step and FLOPs/token of one config."""
  setup = loop.build(cfg, devices=devices)
  B, L = cfg.data.batch_size, cfg.data.seq_len
  batch = train_throughput.random_batch(cfg)
  with sharding.use_mesh(setup.mesh):
    batch = sharding.global_batch(batch, setup.mesh)
    compiled = setup.train_step.lower(setup.abstract_state, batch).compile()
    stats = compiled.memory_analysis()
    state = setup.init(jax.random.key(0))
    state, m = compiled(state, batch)  # warm up
    jax.block_until_ready(m)
    t0 = time.perf_counter()
    for _ in range(steps):
      state, m = compiled(state, batch)
    jax.block_until_ready(m)
    step_s = (time.perf_counter() - t0) / steps
  return {'microbatches': cfg.train.microbatches,
          'temp_bytes': stats.temp_size_in_bytes if stats is not None else None,
          'step_s': step_s, 'tokens_per_s': B * L / step_s,
          'flops_per_token': flops.train_flops_per_token(state.params, setup.cfg.model, L,
                                                          setup.param_axes)}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--microbatches', default='1,2,4,8')
  parser.add_argument('--d_model', type=int, default=256)
  parser.add_argument('--seq_len', type=int, default=256)
  parser.add_argument('--batch', type=int, default=32)
  parser.add_argument('--steps', type=int, default=5)
  parser.add_argument('--dtype', default='auto')
  parser.add_argument('--json', default=None)
  args = parser.parse_args(argv)
  devices = jax.devices()[:1]
  matmul_peak, spec_peak = flops.measured_peak(devices), flops.spec_peak(devices)
  rows = []
  for micro in (int(s) for s in args.microbatches.split(',')):
    cfg = train_throughput.model_config(args.d_model, args.seq_len, args.batch,
                                        args.dtype, micro)
    row = measure(cfg, args.steps, devices)
    achieved = row['tokens_per_s'] * row['flops_per_token']
    row['mfu_measured'] = achieved / matmul_peak
    row['mfu'] = achieved / spec_peak if spec_peak else row['mfu_measured']
    rows.append(row)
  first, last = rows[0], rows[-1]
  temp_ratio = (last['temp_bytes'] / first['temp_bytes']
                if first['temp_bytes'] else None)
  time_ratio = last['step_s'] / first['step_s']
  print(f'device: {devices[0].device_kind} ({jax.default_backend()}), dtype {args.dtype}, '
        f'global batch {args.batch} x {args.seq_len}, d_model {args.d_model}')
  print(f'{"micro":>6} {"temp MB":>9} {"step ms":>9} {"tokens/s":>10} {"MFU":>7} '
        f'{"MFU(matmul)":>12}')
  for r in rows:
    temp = f'{r["temp_bytes"] / 1e6:.2f}' if r['temp_bytes'] is not None else 'n/a'
    print(f'{r["microbatches"]:>6} {temp:>9} {r["step_s"] * 1e3:>9.1f} '
          f'{r["tokens_per_s"]:>10.0f} {r["mfu"]:>7.1%} {r["mfu_measured"]:>12.1%}')
  print(f'temp_ratio (M={last["microbatches"]} / M={first["microbatches"]}): '
        f'{temp_ratio if temp_ratio is None else round(temp_ratio, 3)}, '
        f'time_ratio: {time_ratio:.3f}')
  if args.json:
    with open(args.json, 'w') as f:
      json.dump({'rows': rows, 'temp_ratio': temp_ratio, 'time_ratio': time_ratio,
                 'device': devices[0].device_kind, 'backend': jax.default_backend(),
                 'dtype': args.dtype, 'matmul_peak_flops': matmul_peak,
                 'spec_peak_flops': spec_peak}, f, indent=1)
  return rows


if __name__ == '__main__':
  main()

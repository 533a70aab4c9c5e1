r"""Train-step throughput and model-FLOPs utilization against a measured matmul peak.

  python -m benchmarks.train_throughput [--sizes 256,384,512] [--json out.json]

For each model width, times the jitted train step (the same one `train_and_evaluate`
uses) on synthetic batches and reports tokens/s and MFU = tokens/s x train FLOPs per
token (6N + attention, PaLM App. B) / the FLOP/s of a large `jnp.dot` measured in the
same process just before, so the ratio is stable on a noisy shared machine.
`--json PATH` writes {"rows": [{"d_model", "params", "tokens_per_s", "mfu"}, ...],
"matmul_peak_flops": ...}.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import numpy as np

from lattice import config as config_lib
from lattice import sharding
from lattice.train import flops, loop


def model_config(d_model: int, seq_len: int, batch: int, dtype: str,
                 microbatches: int = 1) -> config_lib.Config:
  return config_lib.build({
      'model': {'d_model': d_model, 'n_layers': 4, 'max_len': seq_len, 'dtype': dtype,
                'attention': {'n_heads': max(d_model // 64, 2)}},
      'data': {'seq_len': seq_len, 'batch_size': batch},
      'optimizer': {'warmup_steps': 0},
      'train': {'steps': 1000, 'microbatches': microbatches},
      'mesh': {'data': 1},
  })


def random_batch(cfg: config_lib.Config) -> dict:
  """A fixed batch of random byte tokens: inputs/targets int32 [B, L], weights ones."""
  B, L = cfg.data.batch_size, cfg.data.seq_len
  tokens = np.random.default_rng(0).integers(0, 256, (B, L + 1)).astype(np.int32)
  return {'inputs': tokens[:, :-1], 'targets': tokens[:, 1:],
          'weights': np.ones((B, L), np.float32)}


def time_train_step(cfg: config_lib.Config, steps: int, devices) -> dict:
  setup = loop.build(cfg, devices=devices)
  B, L = cfg.data.batch_size, cfg.data.seq_len
  batch = random_batch(cfg)
  with sharding.use_mesh(setup.mesh):
    state = setup.init(jax.random.key(0))
    batch = sharding.global_batch(batch, setup.mesh)
    for _ in range(2):  # compile and warm up
      state, m = setup.train_step(state, batch)
    jax.block_until_ready(m)
    t0 = time.perf_counter()
    for _ in range(steps):
      state, m = setup.train_step(state, batch)
    jax.block_until_ready(m)
    seconds = time.perf_counter() - t0
  params = flops.count_params(state.params)
  fpt = flops.train_flops_per_token(state.params, setup.cfg.model, L, setup.param_axes)
  return {'d_model': cfg.model.d_model, 'params': params, 'flops_per_token': fpt,
          'tokens_per_s': steps * B * L / seconds}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--sizes', default='256,384,512')
  parser.add_argument('--seq_len', type=int, default=256)
  parser.add_argument('--batch', type=int, default=16)
  parser.add_argument('--steps', type=int, default=10)
  parser.add_argument('--dtype', default='float32')
  parser.add_argument('--json', default=None)
  args = parser.parse_args(argv)
  devices = jax.devices()[:1]
  import jax.numpy as jnp
  peak = flops.measure_matmul_peak(dtype=getattr(jnp, args.dtype))
  rows = []
  for d in (int(s) for s in args.sizes.split(',')):
    row = time_train_step(model_config(d, args.seq_len, args.batch, args.dtype),
                          args.steps, devices)
    row['mfu'] = row['tokens_per_s'] * row['flops_per_token'] / peak
    rows.append(row)
  print(f'device: {devices[0].device_kind} ({jax.default_backend()}), '
        f'matmul peak {peak / 1e9:.1f} GFLOP/s ({args.dtype}, measured)')
  print(f'{"d_model":>8} {"params":>10} {"GFLOP/token":>12} {"tokens/s":>10} {"MFU":>7}')
  for r in rows:
    print(f'{r["d_model"]:>8} {r["params"]:>10,} {r["flops_per_token"] / 1e9:>12.4f} '
          f'{r["tokens_per_s"]:>10.0f} {r["mfu"]:>7.1%}')
  if args.json:
    with open(args.json, 'w') as f:
      json.dump({'rows': rows, 'matmul_peak_flops': peak,
                 'device': devices[0].device_kind, 'backend': jax.default_backend(),
                 'seq_len': args.seq_len, 'batch': args.batch, 'dtype': args.dtype}, f,
                indent=1)
  return rows


if __name__ == '__main__':
  main()

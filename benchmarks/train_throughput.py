r"""Train-step throughput and model-FLOPs utilization against a measured matmul peak.

  python -m benchmarks.train_throughput [--sizes 256,384,512] [--json out.json]

For each model width, times the jitted train step (the same one `train_and_evaluate`
uses) on synthetic batches and reports tokens/s and MFU = tokens/s x train FLOPs per
token (6N + attention, PaLM App. B) / the FLOP/s of a large `jnp.dot` measured in the
same process just before, so the ratio is stable on a noisy shared machine.
`--attention` sets `model.attention.implementation` (default auto: the einsum path
of `lattice.nn.einsum_attention` on CPU, `jax.nn.dot_product_attention` elsewhere);
`--attention xla` times the library's XLA path for comparison.

`--json PATH` writes {"rows": [{"d_model", "params", "tokens_per_s", "mfu"}, ...],
"best_mfu", "matmul_peak_flops", "attention", "load_average" (1-minute, before and
after), "maxtext": {...}}.

MaxText peer (issue #18 item 5): `maxtext_status()` tries to import the `maxtext`
package in this process and records why no MaxText row is printed. No row is ever
made up: running MaxText's train step on this config is not implemented, so the field
says whether the package is importable here and, when not, the error and the
requirements that keep it out of this environment.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import jax
import numpy as np

from benchmarks import machine
from lattice import config as config_lib
from lattice import sharding
from lattice.train import flops, loop


# Why PyPI's maxtext does not install here, read with `pip install --dry-run maxtext`
# and its wheel's METADATA on 2026-11-30 (maxtext 0.2.5, the newest release).
MAXTEXT_REQUIREMENTS = (
    'PyPI maxtext 0.2.5 (newest) declares Requires-Python >=3.12, so pip finds no '
    'installable version for Python 3.11; its cuda12/tpu extras need jax>=0.11.1, '
    'jaxlib>=0.11.1, flax>=0.12.9; three of its modules (kernels/mhc/api.py, '
    'kernels/mhc/common.py, examples/sft_qwen3_demo_utils.py) use Python 3.12-only '
    'syntax (PEP 695 `type` aliases, PEP 701 f-strings) and do not compile on 3.11')


def maxtext_status() -> dict:
  """{'ran': False, 'importable', 'reason', 'python', 'jax', 'flax'}: whether the
  `maxtext` package imports in this process; no MaxText row is timed either way."""
  import flax
  status = {'ran': False, 'python': platform.python_version(), 'jax': jax.__version__,
            'flax': flax.__version__}
  try:
    import maxtext  # noqa: F401  (optional peer; never a dependency)
  except Exception as e:  # noqa: BLE001  (any import failure is the recorded reason)
    status['importable'] = False
    status['reason'] = (f'maxtext does not import here ({type(e).__name__}: {e}); '
                        f'{MAXTEXT_REQUIREMENTS}')
    return status
  status['importable'] = True
  status['reason'] = ('maxtext imports, but this benchmark does not yet build and time '
                      "MaxText's train step on the same config, so no row is printed")
  return status


def model_config(d_model: int, seq_len: int, batch: int, dtype: str,
                 microbatches: int = 1, attention: str = 'auto') -> config_lib.Config:
  return config_lib.build({
      'model': {'d_model': d_model, 'n_layers': 4, 'max_len': seq_len, 'dtype': dtype,
                'attention': {'n_heads': max(d_model // 64, 2),
                              'implementation': attention}},
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
  parser.add_argument('--attention', default='auto',
                      help='model.attention.implementation: auto | einsum | xla | cudnn')
  parser.add_argument('--json', default=None)
  args = parser.parse_args(argv)
  mach = machine.describe()
  print(machine.line(mach))
  devices = jax.devices()[:1]
  import jax.numpy as jnp
  peak = flops.measure_matmul_peak(dtype=getattr(jnp, args.dtype))
  rows = []
  for d in (int(s) for s in args.sizes.split(',')):
    row = time_train_step(model_config(d, args.seq_len, args.batch, args.dtype,
                                       attention=args.attention), args.steps, devices)
    row['mfu'] = row['tokens_per_s'] * row['flops_per_token'] / peak
    rows.append(row)
  machine.finish(mach)
  load = [mach['load_average_start'], mach['load_average_end']]
  maxtext = maxtext_status()
  best = max(r['mfu'] for r in rows)
  print(f'device: {devices[0].device_kind} ({jax.default_backend()}), '
        f'matmul peak {peak / 1e9:.1f} GFLOP/s ({args.dtype}, measured); attention '
        f'{args.attention}; load average {load[0]:.2f} -> {load[1]:.2f}')
  print(f'{"d_model":>8} {"params":>10} {"GFLOP/token":>12} {"tokens/s":>10} {"MFU":>7}')
  for r in rows:
    print(f'{r["d_model"]:>8} {r["params"]:>10,} {r["flops_per_token"] / 1e9:>12.4f} '
          f'{r["tokens_per_s"]:>10.0f} {r["mfu"]:>7.1%}')
  print(f'best MFU {best:.1%}; MaxText: not run: {maxtext["reason"]}')
  if args.json:
    with open(args.json, 'w') as f:
      json.dump({'rows': rows, 'best_mfu': best, 'matmul_peak_flops': peak,
                 'attention': args.attention, 'load_average': load, 'maxtext': maxtext,
                 'machine': mach,
                 'device': devices[0].device_kind, 'backend': jax.default_backend(),
                 'seq_len': args.seq_len, 'batch': args.batch, 'dtype': args.dtype}, f,
                indent=1)
  return rows


if __name__ == '__main__':
  main()

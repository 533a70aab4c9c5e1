r"""Train-step throughput and model-FLOPs utilization against a measured matmul peak.

  python -m benchmarks.train_throughput [--sizes 256,384,512] [--json out.json]

For each model width, times the jitted train step (the same one `train_and_evaluate`
uses) on synthetic batches and reports tokens/s and MFU = tokens/s x train FLOPs per
token (6N + attention, PaLM App. B) / the FLOP/s of a large `jnp.dot` measured in the
same process just before, so the ratio is stable on a noisy shared machine.
`--attention` sets `model.attention.implementation` (default auto: the einsum path
of `lattice.nn.einsum_attention` on CPU, cuDNN's flash attention on GPUs where
`lattice.nn.attention.cudnn_flash_usable()` and the compute dtype is bf16/fp16, else
`jax.nn.dot_product_attention`'s choice); `--attention xla` times the library's XLA
path for comparison. The path taken is printed and written as `attention_path`
('xla (cuDNN fallback)' when jax refused cuDNN while tracing).

`--layers` (default 4), `--scan` and `--remat` set the model's depth,
`model.scan_layers` and `model.remat`; `--scale_defaults` takes the defaults of
`lattice.run.scale.scale_config` (scanned layers, remat 'dots', bf16 compute), the
settings of #18's ">= 1B parameters" GPU row (scripts/device_check.sh: d_model
2048, 24 layers, 1.22B parameters). On chips `lattice.chips` lists, each row also
gets `mfu_spec`: the same FLOPs over the published dense bf16 peak (#18's GPU goal is
stated against it; the measured peak is the CPU goal's reference).

`--json PATH` writes {"rows": [{"d_model", "params", "flops_per_token",
"tokens_per_s", "mfu", "mfu_spec"}, ...], "best_mfu", "best_mfu_spec",
"matmul_peak_flops", "spec_peak_flops", "attention", "attention_path" (what ran:
einsum, cudnn, splash, 'library default (XLA)' or 'xla (cuDNN fallback)'), "layers",
"scan", "remat", "dtype", "seq_len", "batch", "load_average" (1-minute, before and
after), "maxtext": {...}, "machine", "device", "backend"}.

MaxText peer (issue #18 item 5): `maxtext_status()` tries to import the `maxtext`
package in this process and records why no MaxText row is printed. No row is ever
made up: running MaxText's train step on this config is not implemented, so the field
says whether the package is importable here and, when not, the error and the
requirements that keep it out of this environment.
"""

from __future__ import annotations

import argparse
import importlib
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
    importlib.import_module('maxtext')  # optional peer; never a dependency
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
                 microbatches: int = 1, attention: str = 'auto', layers: int = 4,
                 scan: bool = False, remat: str = 'none') -> config_lib.Config:
  return config_lib.build({
      'model': {'d_model': d_model, 'n_layers': layers, 'max_len': seq_len,
                'dtype': dtype, 'scan_layers': scan, 'remat': remat,
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
  parser.add_argument('--dtype', default=None,
                      help='compute dtype (default float32; bfloat16 with --scale_defaults)')
  parser.add_argument('--attention', default='auto',
                      help='model.attention.implementation: auto | einsum | xla | cudnn | splash')
  parser.add_argument('--layers', type=int, default=4)
  parser.add_argument('--scan', action=argparse.BooleanOptionalAction, default=None,
                      help='model.scan_layers (default: off, on with --scale_defaults)')
  parser.add_argument('--remat', default=None, choices=('none', 'full', 'dots'),
                      help="model.remat (default: none, 'dots' with --scale_defaults)")
  parser.add_argument('--scale_defaults', action='store_true',
                      help='scan, remat dots and bf16 compute, as lattice.run.scale')
  parser.add_argument('--json', default=None)
  args = parser.parse_args(argv)
  args.dtype = args.dtype or ('bfloat16' if args.scale_defaults else 'float32')
  scan = args.scale_defaults if args.scan is None else args.scan
  remat = args.remat or ('dots' if args.scale_defaults else 'none')
  mach = machine.describe()
  print(machine.line(mach))
  devices = jax.devices()[:1]
  import jax.numpy as jnp
  peak = flops.measure_matmul_peak(dtype=getattr(jnp, args.dtype))
  spec = flops.spec_peak(devices)
  rows = []
  for d in (int(s) for s in args.sizes.split(',')):
    row = time_train_step(model_config(d, args.seq_len, args.batch, args.dtype,
                                       attention=args.attention, layers=args.layers,
                                       scan=scan, remat=remat), args.steps, devices)
    row['mfu'] = row['tokens_per_s'] * row['flops_per_token'] / peak
    row['mfu_spec'] = row['tokens_per_s'] * row['flops_per_token'] / spec if spec else None
    rows.append(row)
  machine.finish(mach)
  load = [mach['load_average_start'], mach['load_average_end']]
  maxtext = maxtext_status()
  from lattice.nn import attention as attention_lib  # pylint: disable=g-import-not-at-top
  cfg0 = model_config(rows[0]['d_model'], args.seq_len, args.batch, args.dtype,
                      attention=args.attention, layers=args.layers).model
  attention_path = attention_lib.train_implementation(
      args.attention, getattr(jnp, args.dtype), cfg0.head_dim, args.seq_len)
  if attention_path == 'cudnn' and attention_lib._CUDNN_FALLBACK_WARNED:  # pylint: disable=protected-access
    attention_path = 'xla (cuDNN fallback)'
  elif attention_path == 'auto':
    attention_path = 'library default (XLA)'
  best = max(r['mfu'] for r in rows)
  best_spec = max(r['mfu_spec'] for r in rows) if spec else None
  print(f'device: {devices[0].device_kind} ({jax.default_backend()}), '
        f'matmul peak {peak / 1e9:.1f} GFLOP/s ({args.dtype}, measured)'
        + (f', spec bf16 peak {spec / 1e12:.0f} TFLOP/s' if spec else '')
        + f'; attention {args.attention} ({attention_path}); {args.layers} layers, '
        f'scan {scan}, remat '
        f'{remat}; load average {load[0]:.2f} -> {load[1]:.2f}')
  print(f'{"d_model":>8} {"params":>14} {"GFLOP/token":>12} {"tokens/s":>10} {"MFU":>7}'
        + (f' {"MFU spec":>9}' if spec else ''))
  for r in rows:
    print(f'{r["d_model"]:>8} {r["params"]:>14,} {r["flops_per_token"] / 1e9:>12.4f} '
          f'{r["tokens_per_s"]:>10.0f} {r["mfu"]:>7.1%}'
          + (f' {r["mfu_spec"]:>9.1%}' if spec else ''))
  print(f'best MFU {best:.1%}' + (f' ({best_spec:.1%} of the spec peak)' if spec else '')
        + f'; MaxText: not run: {maxtext["reason"]}')
  if args.json:
    with open(args.json, 'w') as f:
      json.dump({'rows': rows, 'best_mfu': best, 'best_mfu_spec': best_spec,
                 'matmul_peak_flops': peak, 'spec_peak_flops': spec or None,
                 'attention': args.attention, 'attention_path': attention_path,
                 'layers': args.layers, 'scan': scan,
                 'remat': remat, 'load_average': load, 'maxtext': maxtext,
                 'machine': mach,
                 'device': devices[0].device_kind, 'backend': jax.default_backend(),
                 'seq_len': args.seq_len, 'batch': args.batch, 'dtype': args.dtype}, f,
                indent=1)
  return rows


if __name__ == '__main__':
  main()

r"""MoE layer forward+backward time against a dense FFN with the same active FLOPs.

  python -m benchmarks.moe_layer [--experts 8,16,32] [--top_k 2] [--json out.json]

For each expert count E, times one jitted `jax.value_and_grad` (w.r.t. params and
input) of sum(y**2) for `lattice.moe.layer.MoE` with top-k routing and experts
`expert_d_ff` wide, and for `lattice.nn.mlp.MLP` with d_ff = top_k * expert_d_ff, so
the expert matmuls do the same FLOPs per token as the dense FFN. The router's D x E
matmul, the top-k, the sort/gathers of dispatch and any padding rows are extra MoE
cost and are counted in the MoE time. Neither side fuses SwiGLU's two up-projections
into one matmul: the dense FFN runs wi_0 and wi_1 as two dots, and the grouped path
runs them as two grouped products. Variants: dropless with `dropless_impl='grouped'`
(auto's CPU path: for float32 with the native kernel built, a native counting sort,
router matmul and top-k, and SwiGLU experts fused with the token gather and the
gate-weighted combine, the products of each block of an expert's rows on the kernel's
own AVX-512 code (`kernels/grouped_matmul/small_gemm.h`: no sgemm packing or zeroing
passes) where the CPU has it, else one OpenBLAS sgemm per product, through two XLA FFI
calls, `kernels/grouped_matmul/moe.py`; otherwise
`kernels.grouped_matmul.grouped_ffn`'s batched dots over each expert's window of
sorted rows with a tile loop for rows past a window, between XLA gathers;
`grouped_ffn_impl` in the output says which ran: build the kernel with `python
setup.py build_ext --inplace` or `pip install -e .`, and install scipy-openblas32,
or it is 'windows'; the header names the OpenBLAS kernels it loaded,
`native.openblas_coretype`) and 'blocks'
(auto's path elsewhere), capacity dispatch (`--capacity_factor`, drops
overflow), and dropless `ragged` (`jax.lax.ragged_dot`, the JAX library's grouped
matmul; ~5x slower on CPU, so only at `--ragged_experts`) and, where tokamax is
installed, `tokamax` (dropless_impl='tokamax': the kernel library's `ragged_dot`, #18's
peer for the grouped matmul; its Mosaic and Triton kernels are GPU/TPU only, on CPU it
runs the same XLA path as `ragged`), at the same expert counts. A second baseline,
`dense_2d`, is
the same dense SwiGLU with the same weights as plain 2-D `jnp.dot`s on [T, D]: the
model's `MLP` contracts [B, L, D] inputs, whose weight gradients XLA:CPU computes on
a slower path, so `dropless_over_dense_2d` says how much of the ratio is the
baseline's own layout.
After a compile+warmup call per function, the functions of one E are timed
round-robin (so load on a shared machine hits them alike) and the median of
`--repeats` calls is kept. Where the native kernel runs, the round robin also times the
same compiled layer with its products on each other code this CPU runs
(`native.set_moe_gemm`): `grouped_openblas` (OpenBLAS's sgemm) and `grouped_avx2`
(small_gemm.h's AVX2 products), so the products' share of the ratio is measured in one
process. `ragged` is timed alone after them (in the round robin
it slowed the dense call that followed it). Router weights use the layer's own random init on N(0, 1)
inputs; the batch's MaxVio and each variant's drop rate are reported alongside.

No XLA flag is set: the dense FFN and every MoE variant run under XLA:CPU's
defaults in one process (the dense dots on its YNNPACK path). The native kernel's
threads are XLA's intra-op pool, the one the dense dots use.

Why the native kernel (decided from single-core CPU-time A/B runs on the shared
2-core machine, 30 Nov, not measurements): XLA:CPU ran the windows' batched
[E, C, 256] x [E, 256, 256] dots at ~75-87 GFLOP/s a core against ~100 for the dense
FFN's [2048, 256] x [256, 512] dots (a plain 2-D [128, 256] x [256, 256] dot: ~75),
while OpenBLAS ran the per-expert [128, 256] x [256, 256] product, and its transposed
forms, at ~97-98; the grouped FFN alone (fwd+bwd, the router's loads) took ~1.2x the
dense FFN's time natively against ~1.5x on the windows (their padding rows, remainder
loop and window gathers included). XLA:CPU flags tried for the batched dot (oneDNN,
XNNPACK fusion types, YNNPACK off) gave no better than the default. Those OpenBLAS
rates were its AVX2 'Haswell' kernels (its detection's pick on the build machine's
AMD EPYC, and the machine's OPENBLAS_CORETYPE); the kernel now loads the AVX-512
'SkylakeX' ones there, ~200-235 GFLOP/s of CPU time on the same products
(`native.openblas_coretype`). On an AVX2-only Zen 1 EPYC (a Firecracker VM, 1 Dec) the
Haswell kernel's prefetches past the packed B panel into never-touched pages of
OpenBLAS's packing buffer cost a page walk each, and the per-expert products ran at
~10 GFLOP/s a core instead of ~35 (dropless 2.35-2.64x the dense time); the native
library now maps those buffers when it loads (`native.prefault_openblas_buffers`;
LATTICE_OPENBLAS_PREFAULT=0 turns it off for the A/B). On an Intel Xeon VM with
AVX-512 (2 Dec, 7 measured runs) E = 32 varied from 1.20x to 1.52x between processes
with the number of page faults on XLA's fresh output buffers (glibc returning their
pages between calls; BENCHMARKS.md's eleventh session); E = 8 and 16 stayed <= 1.25x.
Started with
GLIBC_TUNABLES=glibc.malloc.arena_max=1:glibc.malloc.trim_threshold=1073741824:\
glibc.malloc.mmap_threshold=33554432 (one malloc arena, freed memory kept mapped), the
faults stayed at E = 8's count in every process tried (informal). On an AMD EPYC of
family 26 with AVX-512 (2 Dec, 7 measured runs, BENCHMARKS.md's twelfth session) the
worst E gave 0.98-1.28x, E = 32 again the most spread (0.90-1.28x).

Goal: dropless MoE <= 1.3x the dense time on CPU (anchor: MegaBlocks' dropless
kernels beat capacity-based dispatch by up to 40%, arXiv 2211.15841).
`--json PATH` writes {"dropless_over_dense": worst ratio over E of the dropless path
that dropless_impl='auto' takes on this backend ("dropless_impl" names it, and
"grouped_ffn_impl" the grouped FFN it ran: 'native' or 'windows', and
"openblas_kernels" the OpenBLAS kernel family the native path loaded, "moe_gemm" the
native kernel's products: 'avx512', 'avx2' or 'openblas', null where it does not run),
"grouped_openblas_over_grouped", "grouped_avx2_over_grouped" (the smallest over E of
grouped_<code> / grouped, when both ran),
"grouped_over_dense", "blocks_over_dense", "capacity_over_dense": likewise,
"ragged_over_dense", "tokamax_over_dense" (if measured), "dropless_over_dense_2d" (the auto path against
the 2-D baseline), "openblas_prefaulted" (MiB of OpenBLAS packing buffers mapped at load,
`native.prefault_openblas_buffers`; null with LATTICE_OPENBLAS_PREFAULT=0, the A/B),
"rows": [...], "device", "backend", settings}.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import time

import flax.linen as nn
import jax
import jax.numpy as jnp

from benchmarks import machine
from kernels.grouped_matmul import ffn as grouped_ffn_lib
from kernels.grouped_matmul import native as native_lib
from lattice import config as config_lib
from lattice.moe import layer as moe_layer
from lattice.moe import router as router_lib
from lattice.nn import layers, mlp


def model_config(d_model: int, seq_len: int, ffn: dict, dtype: str) -> config_lib.ModelConfig:
  return config_lib.build({
      'model': {'d_model': d_model, 'n_layers': 1, 'max_len': seq_len, 'dtype': dtype,
                'vocab_size': 384, 'attention': {'n_heads': max(d_model // 64, 1)},
                'ffn': ffn},
      'data': {'seq_len': seq_len, 'batch_size': 1},
  }).model


def _grad_fn(module: nn.Module):
  def loss(params, x):
    return jnp.sum(jnp.square(module.apply({'params': params}, x).astype(jnp.float32)))
  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))


def _dense_2d_grad_fn(activation: str):
  """value_and_grad of the dense FFN as 2-D dots on x_TxD, reading MLP's params."""
  act, gated = layers.ACTIVATIONS[activation], activation in mlp.GATED

  def loss(params, x_BxLxD):
    x_TxD = x_BxLxD.reshape(-1, x_BxLxD.shape[-1])
    h_TxF = act(x_TxD @ params['wi_0']['kernel'])
    if gated:
      h_TxF = h_TxF * (x_TxD @ params['wi_1']['kernel'])
    return jnp.sum(jnp.square(h_TxF @ params['wo']['kernel']))

  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))


def _fused(args) -> bool:
  """Whether the grouped variant runs the fused SwiGLU kernel (kernels/grouped_matmul/moe.py)."""
  return args.activation == 'swiglu' and moe_layer.native_moves(
      jnp.zeros((), args.dtype), model_config(args.d_model, args.seq_len,
                                              {'kind': 'dense', 'd_ff': 8}, args.dtype))


def _time_round_robin(fns: dict, repeats: int) -> dict[str, float]:
  """Median seconds per call of each (fn, args), calls interleaved across fns."""
  for fn, args in fns.values():  # compile and warm up
    jax.block_until_ready(fn(*args))
  times = {name: [] for name in fns}
  for _ in range(repeats):
    for name, (fn, args) in fns.items():
      t0 = time.perf_counter()
      jax.block_until_ready(fn(*args))
      times[name].append(time.perf_counter() - t0)
  return {name: statistics.median(ts) for name, ts in times.items()}


def bench_experts(E: int, args, with_ragged: bool) -> list[dict]:
  D, K, F = args.d_model, args.top_k, args.expert_d_ff
  x = jax.random.normal(jax.random.key(1), (args.batch, args.seq_len, D),
                        getattr(jnp, args.dtype))
  common = {'kind': 'moe', 'n_experts': E, 'top_k': K, 'expert_d_ff': F,
            'activation': args.activation, 'norm_topk': K > 1}
  variants = {'grouped': {'dispatch': 'dropless', 'dropless_impl': 'grouped'},
              'blocks': {'dispatch': 'dropless', 'dropless_impl': 'blocks'},
              'capacity': {'dispatch': 'capacity',
                           'capacity_factor': args.capacity_factor}}
  if with_ragged:
    variants['ragged'] = {'dispatch': 'dropless', 'dropless_impl': 'ragged'}
    if importlib.util.find_spec('tokamax') is not None:
      variants['tokamax'] = {'dispatch': 'dropless', 'dropless_impl': 'tokamax'}

  dense = mlp.MLP(model_config(D, args.seq_len, {'kind': 'dense', 'd_ff': K * F,
                                                 'activation': args.activation},
                               args.dtype))
  dense_params = nn.unbox(dense.init(jax.random.key(0), x))['params']
  fns = {'dense': (_grad_fn(dense), (dense_params, x)),
         'dense_2d': (_dense_2d_grad_fn(args.activation), (dense_params, x))}
  stats = {'dense': (None, 0.0), 'dense_2d': (None, 0.0)}
  moe_params = None
  for name, ffn in variants.items():
    moe = moe_layer.MoE(model_config(D, args.seq_len, {**common, **ffn}, args.dtype))
    if moe_params is None:  # one init: every variant routes the batch identically
      moe_params = nn.unbox(moe.init(jax.random.key(0), x))['params']
    _, mut = jax.jit(lambda p, x, m=moe: m.apply({'params': p}, x,
                                                 mutable=['intermediates']))(moe_params, x)
    inter = mut['intermediates']
    stats[name] = (float(router_lib.max_violation(inter['expert_load'][0])),
                   float(inter['metrics'][0]['drop_rate']))
    fns[name] = (_grad_fn(moe), (moe_params, x))
  if grouped_ffn_lib.native_applies(getattr(jnp, args.dtype)):
    # The same compiled function with the native kernel's products on each other code
    # this CPU runs (the setting is read when the kernel runs, so the call completes
    # inside it): grouped_openblas, grouped_avx2.
    fn, fn_args = fns['grouped']
    auto = native_lib.moe_gemm()
    for kind in ('openblas', 'avx2'):
      if kind == auto or native_lib.set_moe_gemm(kind) != kind:
        continue

      def on(*a, fn=fn, kind=kind):
        native_lib.set_moe_gemm(kind)
        try:
          return jax.block_until_ready(fn(*a))
        finally:
          native_lib.set_moe_gemm(None)

      fns[f'grouped_{kind}'] = (on, fn_args)
      stats[f'grouped_{kind}'] = stats['grouped']
    native_lib.set_moe_gemm(None)
  # ragged_dot (~7x the dense time; tokamax's the same on CPU) is timed on its own
  # afterwards: inside the round robin it slowed the dense call after it (dense 37-42
  # ms at E = 8 against 30-33 ms
  # at E = 16 / 32 in the same runs, 30.8 ms at E = 8 without ragged; 2026-11-30).
  slow = {k: fns.pop(k) for k in ('ragged', 'tokamax') if k in fns}
  med = _time_round_robin(fns, args.repeats)
  for name, fn_args in slow.items():
    med.update(_time_round_robin({name: fn_args}, args.repeats))
    fns[name] = fn_args

  T = args.batch * args.seq_len
  n_mats = 3 if args.activation in mlp.GATED else 2
  ffn_flops = 3 * 2 * T * D * K * F * n_mats  # fwd + bwd, active expert matmuls
  router_flops = 3 * 2 * T * D * E
  rows = []
  for name in fns:
    rows.append({'n_experts': E, 'top_k': K, 'variant': name,
                 'ms': med[name] * 1e3, 'ratio_vs_dense': med[name] / med['dense'],
                 'maxvio_batch': stats[name][0], 'drop_rate': stats[name][1],
                 'gflop': (ffn_flops + (0 if name.startswith('dense') else router_flops))
                 / 1e9})
  return rows


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--experts', default='8,16,32')
  parser.add_argument('--top_k', type=int, default=2)
  parser.add_argument('--expert_d_ff', type=int, default=256)
  parser.add_argument('--d_model', type=int, default=256)
  parser.add_argument('--batch', type=int, default=8)
  parser.add_argument('--seq_len', type=int, default=256)
  parser.add_argument('--capacity_factor', type=float, default=1.25)
  parser.add_argument('--ragged_experts', default='8',
                      help="expert counts also timed with dropless_impl='ragged' "
                           "(comma list; '' for none)")
  parser.add_argument('--activation', default='swiglu')
  parser.add_argument('--repeats', type=int, default=10)
  parser.add_argument('--dtype', default='float32')
  parser.add_argument('--json', default=None)
  args = parser.parse_args(argv)
  mach = machine.describe()
  print(machine.line(mach))
  experts = [int(s) for s in args.experts.split(',') if s]
  ragged = {int(s) for s in args.ragged_experts.split(',') if s}

  rows = []
  for E in experts:
    rows += bench_experts(E, args, E in ragged)
  worst = lambda v: max((r['ratio_vs_dense'] for r in rows if r['variant'] == v),
                        default=None)
  auto = moe_layer.auto_dropless_impl()
  ffn_impl = 'native' if grouped_ffn_lib.native_applies(getattr(jnp, args.dtype)) else 'windows'
  summary = {'dropless_over_dense': worst(auto),
             'grouped_over_dense': worst('grouped'),
             'blocks_over_dense': worst('blocks'),
             'capacity_over_dense': worst('capacity')}
  if worst('ragged') is not None:
    summary['ragged_over_dense'] = worst('ragged')
  if worst('tokamax') is not None:
    summary['tokamax_over_dense'] = worst('tokamax')
  for kind in ('openblas', 'avx2'):
    if worst(f'grouped_{kind}') is not None:
      summary[f'grouped_{kind}_over_grouped'] = min(
          r['ms'] / g['ms'] for r in rows for g in rows if r['variant'] == f'grouped_{kind}'
          and g['variant'] == 'grouped' and g['n_experts'] == r['n_experts'])
  summary['dropless_over_dense_2d'] = max(
      r['ms'] / d['ms'] for r in rows for d in rows if r['variant'] == auto
      and d['variant'] == 'dense_2d' and d['n_experts'] == r['n_experts'])

  device = jax.devices()[0]
  blas = native_lib.openblas_corename() if ffn_impl == 'native' else None
  blas_note = ''
  if blas:
    fused = _fused(args)
    prefaulted = native_lib.openblas_prefaulted()
    gemm = native_lib.moe_gemm()
    products = (f'products: {"OpenBLAS" if gemm == "openblas" else "small_gemm.h " + gemm} '
                '(grouped_<code>: the same layer on the other codes), ')
    blas_note = (' (fused SwiGLU experts with the token gather and combine, ' if fused
                 else ' (') + products + f'OpenBLAS kernels {blas}, ' + (
                     f'{prefaulted} MiB of packing buffers prefaulted)' if prefaulted is not None
                     else 'buffers not prefaulted: LATTICE_OPENBLAS_PREFAULT=0)')
  print(f'device: {device.device_kind} ({jax.default_backend()}); '
        f'tokens {args.batch}x{args.seq_len}, d_model {args.d_model}, top_k {args.top_k}, '
        f'expert_d_ff {args.expert_d_ff} (dense d_ff {args.top_k * args.expert_d_ff}), '
        f'{args.activation}, {args.dtype}, median of {args.repeats}; grouped FFN: '
        f'{ffn_impl}{blas_note}; XLA_FLAGS: {os.environ.get("XLA_FLAGS") or "none (defaults)"}')
  print('MoE time includes the router (D x E matmul, top-k) and dispatch; '
        'gflop = fwd+bwd matmul FLOPs')
  print(f'{"E":>4} {"k":>3} {"variant":>16} {"ms":>9} {"vs dense":>9} {"drop":>7} '
        f'{"MaxVio":>7} {"gflop":>7}')
  for r in rows:
    print(f'{r["n_experts"]:>4} {r["top_k"]:>3} {r["variant"]:>16} {r["ms"]:>9.2f} '
          f'{r["ratio_vs_dense"]:>8.2f}x {r["drop_rate"]:>7.1%} '
          f'{"-" if r["maxvio_batch"] is None else format(r["maxvio_batch"], ".2f"):>7} '
          f'{r["gflop"]:>7.2f}')
  print('worst over E: ' + ', '.join(f'{k} {v:.2f}x' for k, v in summary.items()) +
        f' (dropless = {auto}, the auto path here; goal: dropless <= 1.3x)')
  if args.json:
    with open(args.json, 'w') as f:
      json.dump({**summary, 'dropless_impl': auto, 'grouped_ffn_impl': ffn_impl,
                 'openblas_kernels': blas,
                 'moe_gemm': native_lib.moe_gemm() if ffn_impl == 'native' else None,
                 'openblas_prefaulted': native_lib.openblas_prefaulted(), 'rows': rows,
                 'machine': machine.finish(mach), 'device': device.device_kind,
                 'backend': jax.default_backend(), 'd_model': args.d_model,
                 'batch': args.batch, 'seq_len': args.seq_len, 'top_k': args.top_k,
                 'expert_d_ff': args.expert_d_ff, 'capacity_factor': args.capacity_factor,
                 'activation': args.activation, 'dtype': args.dtype,
                 'repeats': args.repeats}, f, indent=1)
  return summary


if __name__ == '__main__':
  main()

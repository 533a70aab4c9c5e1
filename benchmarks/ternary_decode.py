r"""Batch-1 decoding with packed ternary weights against the same model in float.

  python -m benchmarks.ternary_decode [--d_model 1024] [--layers 4] [--new_tokens 64]
                                      [--cpu_path auto|native|xla] [--json out.json]

Builds a BitNet b1.58 decoder (random weights: speed does not depend on training)
at a width where batch-1 decoding is memory-bound, packs it with
`lattice.quant.inference.pack_model` (2-bit codes, 4 a byte, through
`kernels.ternary_matmul`: the Pallas kernel on GPU/TPU; on CPU the native AVX2 /
AVX-512 kernel of `kernels.ternary_cpu` when built, else XLA's unpack-then-dot;
`--cpu_path xla` forces the fallback), and times greedy
KV-cache decoding (`lattice.decode.sampling.generate`, jitted) of the packed model,
of the same weights as a float32 model and as a bfloat16 model, round-robin in one
process after a compile call each; the median of `--repeats` runs is kept. The packed
model's tokens are checked equal to the fake-quantized BitNet model's.

Weight bytes are the projections' (embeddings, norms and head are float in every
variant): bf16 vs 2-bit packed (4 a byte) and base-3 packed (5 a byte, 1.6 bits), one
float32 scale per tensor included.

Goals: 2-bit <= 1/8 and base-3 <= 1/10 of bf16; decode at least as fast as float on
CPU and >= 2x on GPU (anchor: bitnet.cpp 2.37-6.17x over fp16 on x86 CPUs, with
hand-written lookup-table kernels). `--json PATH` writes bf16_over_packed_2bit,
bf16_over_packed_base3, decode_speedup (packed tokens/s / float32 tokens/s),
decode_speedup_vs_bf16, tokens_per_s per variant, kernel_path (the packed model's
matmul path: pallas, native-avx512, native-avx2 or xla-unpack), backend and device.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time

import flax
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import machine
from kernels import ternary_matmul as tm
from lattice import config as config_lib
from lattice.decode import packed_weights as decode_packing
from lattice.decode import sampling
from lattice.nn import transformer
from lattice.quant import inference, packing, ste


def model_config(d_model: int, layers: int, max_len: int) -> config_lib.ModelConfig:
  return config_lib.build({
      'model': {'d_model': d_model, 'n_layers': layers, 'max_len': max_len,
                'vocab_size': 384, 'attention': {'n_heads': max(d_model // 64, 1)},
                'linear': {'kind': 'bitnet'}},
      'data': {'seq_len': max_len, 'batch_size': 1},
  }).model


def weight_bytes(params) -> dict[str, int]:
  flat = flax.traverse_util.flatten_dict(jax.device_get(params))
  kernels = [np.asarray(v) for p, v in flat.items() if p[-1] == 'kernel']
  codes = [np.asarray(ste.ternary_codes(k)[0]) for k in kernels]
  return {'bf16': sum(k.size * 2 for k in kernels),
          'float32': sum(k.size * 4 for k in kernels),
          'packed_2bit': sum(packing.pack_ternary_2bit(c).data.nbytes + 4 for c in codes),
          'packed_base3': sum(packing.pack_ternary_base3(c).data.nbytes + 4 for c in codes)}


def main(argv=None) -> dict:
  ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  ap.add_argument('--d_model', type=int, default=1024)
  ap.add_argument('--layers', type=int, default=4)
  ap.add_argument('--prompt', type=int, default=8)
  ap.add_argument('--new_tokens', type=int, default=64)
  ap.add_argument('--repeats', type=int, default=5)
  ap.add_argument('--cpu_path', default='auto', choices=('auto', 'native', 'xla'),
                  help='CPU path of the packed matmuls (auto: native when built)')
  ap.add_argument('--json', default=None)
  args = ap.parse_args(argv)
  if args.cpu_path == 'auto':
    return _run(args)
  with tm.cpu_auto(args.cpu_path):
    return _run(args)


def _run(args) -> dict:
  mach = machine.describe()
  print(machine.line(mach))
  cfg = model_config(args.d_model, args.layers, args.prompt + args.new_tokens)
  params = transformer.Transformer(cfg).init(
      jax.random.key(0), jnp.zeros((1, 8), jnp.int32))['params']
  params = flax.linen.unbox(params)
  packed_cfg, packed = inference.pack_model(cfg, params)
  float_cfg = dataclasses.replace(cfg, linear=config_lib.LinearConfig())
  bf16_cfg = dataclasses.replace(float_cfg, dtype='bfloat16', param_dtype='bfloat16')
  bf16 = jax.tree.map(lambda x: x.astype(jnp.bfloat16), params)
  prompt = jax.random.randint(jax.random.key(1), (1, args.prompt), 0, 256)
  greedy = sampling.SamplingConfig(temperature=0.0)

  def decoder(model_cfg, params):
    # Float32 projections decode from packed copies (lattice.decode.packed_weights), as every
    # lattice decoder on CPU can: the float32 baseline at its best; the quantized
    # models are left unpacked (their own kernels).
    variables = decode_packing.pack_weights({'params': params}, model_cfg,
                                     module=transformer.Transformer(model_cfg))

    def fn():
      return sampling.generate(variables, prompt, jax.random.key(0),
                               model_cfg=model_cfg, max_new_tokens=args.new_tokens,
                               sampling=greedy)
    return fn

  fns = {'packed_ternary': decoder(packed_cfg, packed),
         'fake_quant_ternary': decoder(cfg, params),
         'float32': decoder(float_cfg, params),
         'bfloat16': decoder(bf16_cfg, bf16)}
  outs = {name: np.asarray(jax.block_until_ready(fn())) for name, fn in fns.items()}
  times = {name: [] for name in fns}
  for _ in range(args.repeats):
    for name, fn in fns.items():
      t0 = time.perf_counter()
      jax.block_until_ready(fn())
      times[name].append(time.perf_counter() - t0)
  tps = {name: args.new_tokens / statistics.median(ts) for name, ts in times.items()}
  wb = weight_bytes(params)
  kernel_path = 'pallas' if jax.default_backend() in ('gpu', 'tpu') else tm.cpu_path()
  result = {
      'bf16_over_packed_2bit': wb['bf16'] / wb['packed_2bit'],
      'bf16_over_packed_base3': wb['bf16'] / wb['packed_base3'],
      'decode_speedup': tps['packed_ternary'] / tps['float32'],
      'decode_speedup_vs_bf16': tps['packed_ternary'] / tps['bfloat16'],
      'tokens_per_s': tps,
      'packed_equals_fake_quant': bool(np.array_equal(outs['packed_ternary'],
                                                      outs['fake_quant_ternary'])),
      'weight_bytes': wb,
      'kernel_path': kernel_path,
      'backend': jax.default_backend(),
      'device': jax.devices()[0].device_kind,
      'settings': vars(args),
      'machine': machine.finish(mach),
  }
  print(f'device: {result["device"]} ({result["backend"]}); d_model {args.d_model}, '
        f'{args.layers} layers, batch 1, {args.new_tokens} new tokens; packed matmul '
        f'path: {kernel_path}')
  print(f'projection bytes: bf16 {wb["bf16"]:,}, 2-bit {wb["packed_2bit"]:,} '
        f'({result["bf16_over_packed_2bit"]:.2f}x smaller), base-3 {wb["packed_base3"]:,} '
        f'({result["bf16_over_packed_base3"]:.2f}x smaller)')
  for name, v in tps.items():
    print(f'  {name:20s} {v:9.1f} tokens/s')
  print(f'packed / float32 decode speed: {result["decode_speedup"]:.2f}x; packed / bf16: '
        f'{result["decode_speedup_vs_bf16"]:.2f}x; packed tokens == fake-quant tokens: '
        f'{result["packed_equals_fake_quant"]}')
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(result, f, indent=1)
  return result


if __name__ == '__main__':
  main()

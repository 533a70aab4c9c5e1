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
matmul path at batch 1: pallas-gemv on GPU, pallas on TPU, native-avx512,
native-avx2 or xla-unpack on CPU), backend and device.

`matvec` (also in the JSON): one [1, d_model] x [d_model, 4 d_model] product alone,
`--matvec_reps` of them chained in one jitted loop (so launches and the model's
other ops drop out), microseconds each: the packed path that decoding takes, on
GPU also the tiled Pallas kernel it replaced at batch 1 (`packed_tiled`), against
`jnp.dot` on bf16 and float32 weights (#18's peer), and `packed_over_bf16` (the
speed ratio, > 1 faster). Weight bytes per product: 2-bit d x 4d / 4, bf16 8x that.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import flax
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import machine, timing
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
  ap.add_argument('--matvec_reps', type=int, default=50,
                  help='products chained per timed call in the matvec rows (0: skip)')
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
  times = timing.round_robin(fns, args.repeats)
  tps = {name: args.new_tokens / t['median'] for name, t in times.items()}
  wb = weight_bytes(params)
  kernel_path = {'gpu': 'pallas-gemv', 'tpu': 'pallas'}.get(jax.default_backend(),
                                                            tm.cpu_path())
  matvec = (time_matvec(args.d_model, args.matvec_reps, args.repeats)
            if args.matvec_reps else None)
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
      'matvec': matvec,
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
  if matvec:
    print(f'one [1, {args.d_model}] x [{args.d_model}, {4 * args.d_model}] product '
          f'({args.matvec_reps} chained), us each: '
          + ', '.join(f'{k} {v:.1f}' for k, v in matvec['us'].items())
          + f'; packed / bf16 speed {matvec["packed_over_bf16"]:.2f}x, packed / float32 '
          f'{matvec["us"]["float32"] / matvec["us"]["packed"]:.2f}x')
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(result, f, indent=1)
  return result


def time_matvec(d_model: int, reps: int, repeats: int) -> dict:
  """{'us': {variant: microseconds a product}, 'packed_over_bf16'}: `reps` chained
  [1, d] x [d, 4d] products per jitted call (a runtime zero added to the input each
  time, so no product is hoisted or folded), median of `repeats` calls, variants
  timed round-robin. Variants: packed (ternary_matmul, impl 'auto'), on GPU
  packed_tiled (the tiled Pallas kernel), bf16 and float32 (`jnp.dot`, HIGHEST
  precision for float32 so GPUs do not round through TF32)."""
  n = 4 * d_model
  kx, kw = jax.random.split(jax.random.key(2))
  x_1xK = jax.random.normal(kx, (1, d_model))
  w_KxN = jax.random.normal(kw, (d_model, n)) * 0.02
  w_packed, sw = tm.pack_weight(w_KxN)
  zero = jnp.zeros((), jnp.float32)

  def chain(product, *weights):
    # Weights are arguments, not closed-over constants (which XLA would embed in the
    # program: hundreds of MB of HLO at d_model 4096).
    @jax.jit
    def run(x_1xK, eps, *weights):
      def body(i, acc):
        return acc + product(x_1xK + i.astype(jnp.float32) * eps, *weights)[0, 0]
      return jax.lax.fori_loop(0, reps, body, jnp.zeros((), jnp.float32))
    return lambda: run(x_1xK, zero, *weights)

  def packed(impl):
    def product(x, w_packed, sw):
      x_q, sx = tm.quantize_activation(x)
      return tm.ternary_matmul(x_q, sx, w_packed, sw, n, impl=impl)
    return product

  fns = {'packed': chain(packed('auto'), w_packed, sw)}
  if jax.default_backend() == 'gpu':
    fns['packed_tiled'] = chain(packed('pallas'), w_packed, sw)
  fns['bf16'] = chain(lambda x, w: jnp.dot(x.astype(jnp.bfloat16), w,
                                           preferred_element_type=jnp.float32),
                      w_KxN.astype(jnp.bfloat16))
  fns['float32'] = chain(lambda x, w: jnp.dot(x, w, precision=jax.lax.Precision.HIGHEST),
                         w_KxN)
  times = timing.round_robin(fns, repeats)
  us = {name: 1e6 * t['median'] / reps for name, t in times.items()}
  return {'us': us, 'packed_over_bf16': us['bf16'] / us['packed'],
          'shape': [1, d_model, n], 'reps': reps}


if __name__ == '__main__':
  main()

r"""Peak memory of `lattice convert hf`: streamed tensor by tensor, not the model's size.

  python -m benchmarks.convert_memory [--d_model 1024] [--layers 3,12] [--vocab 16384]
                                      [--dtype float32|bfloat16] [--json out.json]

Builds random Llama-format checkpoints here (one safetensors shard per layer plus
the index json, written shard by shard) of the same widths at each depth in
`--layers`, then measures fresh subprocesses. Peak RSS is each child's `ru_maxrss`
(resident high-water mark, anonymous and file-backed pages).

The interpreter baseline, two ways:
  imports     a child that imports what the conversion imports (jax, orbax,
              lattice.convert, lattice.train: checked to be every module a
              conversion loads) and starts JAX's CPU backend, then reports its
              peak RSS: the issue's "interpreter's baseline";
  pre-tensor  inside each conversion, the peak RSS just before it reads its first
              tensor (imports plus the fixed work: config, the abstract train
              state, Orbax's first write of the step counter).
The issue's bound is peak < imports + the bytes of the checkpoint's three largest
tensors; it is also checked against the pre-tensor baseline. Streaming also shows
as a peak that does not grow with depth while the model does.

`--json PATH` writes {"rows": [{layers, model_mb, three_largest_mb, pre_tensor_rss_mb,
peak_rss_mb, convert_s}], "imports_rss_mb", "peak_growth_over_model_growth",
"bound_mb", "within_bound_imports", "within_bound_pre_tensor", settings}, with the
bounds and verdicts for the deepest checkpoint.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

MB = 1 << 20

_IMPORTS = r'''
import json, resource
import jax, jax.numpy as jnp, orbax.checkpoint
from lattice.convert import cli, import_hf
from lattice.train import loop, artifacts, checkpoint
cli.limit_malloc_retention()
jnp.zeros(1).block_until_ready()
print(json.dumps({"peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
'''

_CONVERT = r'''
import json, resource, sys, time
import jax, jax.numpy as jnp, orbax.checkpoint
from lattice.convert import cli, import_hf
from lattice.convert.safetensors_reader import HFCheckpoint
from lattice.train import loop, artifacts, checkpoint
jnp.zeros(1).block_until_ready()
pre_tensor = []
get = HFCheckpoint.get
def first_read_noted(self, *args, **kwargs):
  if not pre_tensor:
    pre_tensor.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
  return get(self, *args, **kwargs)
HFCheckpoint.get = first_read_noted
t = time.perf_counter()
cli.main(["hf", "--from", sys.argv[1], "--out", sys.argv[2]])
print(json.dumps({"peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "pre_tensor_kb": pre_tensor[0], "seconds": time.perf_counter() - t}))
'''


def write_checkpoint(directory: Path, d_model: int, layers: int, vocab: int,
                     d_ff: int, n_heads: int, n_kv_heads: int, seed: int = 0,
                     dtype: str = 'float32') -> list[int]:
  """A random Llama checkpoint (`dtype` float32 or bfloat16) in `directory`;
  returns every tensor's bytes."""
  import ml_dtypes
  from safetensors.numpy import save_file
  rng = np.random.default_rng(seed)
  head_dim = d_model // n_heads
  np_dtype = {'float32': np.float32, 'bfloat16': ml_dtypes.bfloat16}[dtype]
  normal = lambda *shape: (rng.standard_normal(shape, np.float32)
                           * np.float32(shape[-1] ** -0.5)).astype(np_dtype)
  ones = lambda n: np.ones(n, np_dtype)
  weight_map, sizes = {}, []

  def shard(name: str, tensors: dict) -> None:
    save_file(tensors, directory / name)
    for k, v in tensors.items():
      weight_map[k] = name
      sizes.append(v.nbytes)

  shard('embed.safetensors', {'model.embed_tokens.weight': normal(vocab, d_model)})
  for i in range(layers):
    p = f'model.layers.{i}'
    shard(f'layer{i}.safetensors', {
        f'{p}.input_layernorm.weight': ones(d_model),
        f'{p}.post_attention_layernorm.weight': ones(d_model),
        f'{p}.self_attn.q_proj.weight': normal(n_heads * head_dim, d_model),
        f'{p}.self_attn.k_proj.weight': normal(n_kv_heads * head_dim, d_model),
        f'{p}.self_attn.v_proj.weight': normal(n_kv_heads * head_dim, d_model),
        f'{p}.self_attn.o_proj.weight': normal(d_model, n_heads * head_dim),
        f'{p}.mlp.gate_proj.weight': normal(d_ff, d_model),
        f'{p}.mlp.up_proj.weight': normal(d_ff, d_model),
        f'{p}.mlp.down_proj.weight': normal(d_model, d_ff)})
  shard('head.safetensors', {'model.norm.weight': ones(d_model),
                             'lm_head.weight': normal(vocab, d_model)})
  (directory / 'model.safetensors.index.json').write_text(json.dumps(
      {'metadata': {'total_size': sum(sizes)}, 'weight_map': weight_map}))
  (directory / 'config.json').write_text(json.dumps({
      'architectures': ['LlamaForCausalLM'], 'model_type': 'llama',
      'hidden_size': d_model, 'intermediate_size': d_ff, 'num_hidden_layers': layers,
      'num_attention_heads': n_heads, 'num_key_value_heads': n_kv_heads,
      'vocab_size': vocab, 'max_position_embeddings': 2048, 'rms_norm_eps': 1e-5,
      'rope_theta': 10000.0, 'hidden_act': 'silu', 'tie_word_embeddings': False,
      'torch_dtype': dtype}))
  return sizes


def _child(code: str, *args: str) -> dict:
  out = subprocess.run([sys.executable, '-c', code, *args], capture_output=True,
                       text=True, check=False)
  if out.returncode:
    raise RuntimeError(f'subprocess failed:\n{out.stderr[-3000:]}')
  return json.loads(out.stdout.strip().splitlines()[-1])


def _convert(tmp: Path, name: str, **dims) -> dict:
  src = tmp / name
  src.mkdir()
  sizes = write_checkpoint(src, **dims)
  out = _child(_CONVERT, str(src), str(tmp / f'{name}_run'))
  return {'layers': dims['layers'], 'model_mb': sum(sizes) / MB,
          'three_largest_mb': sum(sorted(sizes)[-3:]) / MB,
          'pre_tensor_rss_mb': out['pre_tensor_kb'] / 1024,
          'peak_rss_mb': out['peak_kb'] / 1024, 'convert_s': out['seconds']}


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--d_model', type=int, default=1024)
  parser.add_argument('--layers', default='3,12', help='comma-separated depths')
  parser.add_argument('--vocab', type=int, default=16384)
  parser.add_argument('--d_ff', type=int, default=2816)
  parser.add_argument('--heads', type=int, default=8)
  parser.add_argument('--kv_heads', type=int, default=4)
  parser.add_argument('--dtype', choices=('float32', 'bfloat16'), default='float32')
  parser.add_argument('--json', default=None)
  args = parser.parse_args(argv)
  depths = [int(x) for x in args.layers.split(',')]
  with tempfile.TemporaryDirectory(prefix='lattice-convert-mem-') as tmp:
    tmp = Path(tmp)
    imports_mb = _child(_IMPORTS)['peak_kb'] / 1024
    rows = [_convert(tmp, f'l{n}', d_model=args.d_model, layers=n, vocab=args.vocab,
                     d_ff=args.d_ff, n_heads=args.heads, n_kv_heads=args.kv_heads,
                     dtype=args.dtype)
            for n in depths]
  big = rows[-1]
  growth = ((rows[-1]['peak_rss_mb'] - rows[0]['peak_rss_mb'])
            / max(rows[-1]['model_mb'] - rows[0]['model_mb'], 1e-9)) if len(rows) > 1 else None
  bound = imports_mb + big['three_largest_mb']
  result = {'rows': rows, 'imports_rss_mb': imports_mb,
            'peak_growth_over_model_growth': growth, 'bound_mb': bound,
            'within_bound_imports': big['peak_rss_mb'] < bound,
            'within_bound_pre_tensor': (big['peak_rss_mb']
                                        < big['pre_tensor_rss_mb'] + big['three_largest_mb']),
            'settings': vars(args)}
  print(f'interpreter baseline (imports + JAX CPU backend): {imports_mb:.0f} MB')
  print('| layers | model (MB) | 3 largest tensors (MB) | pre-tensor RSS (MB) | '
        'peak RSS (MB) | peak - imports | peak - pre-tensor | convert (s) |\n'
        '|---|---|---|---|---|---|---|---|')
  for r in rows:
    print(f"| {r['layers']} | {r['model_mb']:.0f} | {r['three_largest_mb']:.0f} | "
          f"{r['pre_tensor_rss_mb']:.0f} | {r['peak_rss_mb']:.0f} | "
          f"{r['peak_rss_mb'] - imports_mb:.0f} | "
          f"{r['peak_rss_mb'] - r['pre_tensor_rss_mb']:.0f} | {r['convert_s']:.1f} |")
  if growth is not None:
    print(f'peak growth / model growth from {rows[0]["layers"]} to {big["layers"]} layers: '
          f'{growth:.3f} (0: streaming; 1: holds the model)')
  print(f'peak {big["peak_rss_mb"]:.0f} MB < imports baseline + 3 largest tensors '
        f'({bound:.0f} MB): {result["within_bound_imports"]}')
  print(f'peak {big["peak_rss_mb"]:.0f} MB < pre-tensor baseline + 3 largest tensors '
        f'({big["pre_tensor_rss_mb"] + big["three_largest_mb"]:.0f} MB): '
        f'{result["within_bound_pre_tensor"]}')
  if args.json:
    Path(args.json).write_text(json.dumps(result, indent=1))
  return result


if __name__ == '__main__':
  main()

r"""Peak memory of `lattice convert hf`: streamed tensor by tensor, not the model's size.

  python -m benchmarks.convert_memory [--d_model 1024] [--layers 12] [--vocab 16384]
                                      [--json out.json]

Builds a random Llama-format checkpoint here (float32, one safetensors shard per
layer plus the index json, written shard by shard), then in fresh subprocesses:
  baseline  imports everything the conversion uses (lattice.convert, the train
            stack, Orbax, safetensors) and starts JAX's CPU backend; its peak RSS
            is the interpreter baseline;
  convert   `lattice.convert.import_hf` of the checkpoint into a lattice run.
Peak RSS is the child's `ru_maxrss` (resident set high-water mark, anonymous and
file-backed pages). The claim (issue 21): convert's peak stays below the baseline
plus the bytes of the checkpoint's three largest tensors, far below the model.

`--json PATH` writes {"peak_rss_mb", "baseline_rss_mb", "three_largest_mb",
"model_mb", "bound_mb", "within_bound", "peak_over_model", "convert_s", settings}.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MB = 1 << 20

_BASELINE = r'''
import json, resource
import jax, jax.numpy as jnp, orbax.checkpoint, safetensors
from lattice.convert import import_hf
from lattice.train import loop, artifacts, checkpoint
jnp.zeros(1).block_until_ready()
print(json.dumps({"peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
'''

_CONVERT = r'''
import json, resource, sys, time
import jax, jax.numpy as jnp, orbax.checkpoint, safetensors
from lattice.convert import import_hf
from lattice.train import loop, artifacts, checkpoint
jnp.zeros(1).block_until_ready()
t = time.perf_counter()
import_hf(sys.argv[1], sys.argv[2])
print(json.dumps({"peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "seconds": time.perf_counter() - t}))
'''


def write_checkpoint(directory: Path, d_model: int, layers: int, vocab: int,
                     d_ff: int, n_heads: int, n_kv_heads: int, seed: int = 0) -> list[int]:
  """A random float32 Llama checkpoint in `directory`; returns every tensor's bytes."""
  from safetensors.numpy import save_file
  rng = np.random.default_rng(seed)
  head_dim = d_model // n_heads
  normal = lambda *shape: (rng.standard_normal(shape, np.float32)
                           * np.float32(shape[-1] ** -0.5))
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
        f'{p}.input_layernorm.weight': np.ones(d_model, np.float32),
        f'{p}.post_attention_layernorm.weight': np.ones(d_model, np.float32),
        f'{p}.self_attn.q_proj.weight': normal(n_heads * head_dim, d_model),
        f'{p}.self_attn.k_proj.weight': normal(n_kv_heads * head_dim, d_model),
        f'{p}.self_attn.v_proj.weight': normal(n_kv_heads * head_dim, d_model),
        f'{p}.self_attn.o_proj.weight': normal(d_model, n_heads * head_dim),
        f'{p}.mlp.gate_proj.weight': normal(d_ff, d_model),
        f'{p}.mlp.up_proj.weight': normal(d_ff, d_model),
        f'{p}.mlp.down_proj.weight': normal(d_model, d_ff)})
  shard('head.safetensors', {'model.norm.weight': np.ones(d_model, np.float32),
                             'lm_head.weight': normal(vocab, d_model)})
  (directory / 'model.safetensors.index.json').write_text(json.dumps(
      {'metadata': {'total_size': sum(sizes)}, 'weight_map': weight_map}))
  (directory / 'config.json').write_text(json.dumps({
      'architectures': ['LlamaForCausalLM'], 'model_type': 'llama',
      'hidden_size': d_model, 'intermediate_size': d_ff, 'num_hidden_layers': layers,
      'num_attention_heads': n_heads, 'num_key_value_heads': n_kv_heads,
      'vocab_size': vocab, 'max_position_embeddings': 2048, 'rms_norm_eps': 1e-5,
      'rope_theta': 10000.0, 'hidden_act': 'silu', 'tie_word_embeddings': False,
      'torch_dtype': 'float32'}))
  return sizes


def _child(code: str, *args: str) -> dict:
  out = subprocess.run([sys.executable, '-c', code, *args], capture_output=True,
                       text=True, check=False)
  if out.returncode:
    raise RuntimeError(f'subprocess failed:\n{out.stderr[-3000:]}')
  return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--d_model', type=int, default=1024)
  parser.add_argument('--layers', type=int, default=12)
  parser.add_argument('--vocab', type=int, default=16384)
  parser.add_argument('--d_ff', type=int, default=2816)
  parser.add_argument('--heads', type=int, default=8)
  parser.add_argument('--kv_heads', type=int, default=4)
  parser.add_argument('--json', default=None)
  args = parser.parse_args(argv)
  with tempfile.TemporaryDirectory(prefix='lattice-convert-mem-') as tmp:
    src, run = Path(tmp) / 'hf', Path(tmp) / 'run'
    src.mkdir()
    sizes = write_checkpoint(src, args.d_model, args.layers, args.vocab, args.d_ff,
                             args.heads, args.kv_heads)
    baseline = _child(_BASELINE)
    t = time.perf_counter()
    converted = _child(_CONVERT, str(src), str(run))
    wall = time.perf_counter() - t
  model_mb = sum(sizes) / MB
  three = sum(sorted(sizes)[-3:]) / MB
  base_mb, peak_mb = baseline['peak_kb'] / 1024, converted['peak_kb'] / 1024
  bound = base_mb + three
  result = {'peak_rss_mb': peak_mb, 'baseline_rss_mb': base_mb, 'three_largest_mb': three,
            'model_mb': model_mb, 'bound_mb': bound, 'within_bound': peak_mb < bound,
            'peak_over_model': (peak_mb - base_mb) / model_mb,
            'convert_s': converted['seconds'], 'subprocess_s': wall,
            'settings': vars(args)}
  print(f'checkpoint: {model_mb:.0f} MB in {len(sizes)} tensors (3 largest: {three:.0f} MB)')
  print(f'| process | peak RSS (MB) |\n|---|---|\n| baseline (imports) | {base_mb:.0f} |\n'
        f'| convert | {peak_mb:.0f} |')
  print(f'convert peak - baseline = {peak_mb - base_mb:.0f} MB = '
        f'{result["peak_over_model"]:.2f} x the model; bound (baseline + 3 largest) '
        f'{bound:.0f} MB: {"within" if result["within_bound"] else "EXCEEDED"}; '
        f'conversion {converted["seconds"]:.1f} s')
  if args.json:
    Path(args.json).write_text(json.dumps(result, indent=1))
  return result


if __name__ == '__main__':
  main()

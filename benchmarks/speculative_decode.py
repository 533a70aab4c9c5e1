r"""Self-speculative decoding vs plain greedy decoding of the same model (batch 1).

  python -m benchmarks.speculative_decode [--n 2] [--steps 400] [--workdir RUN]
      [--d_model 256] [--n_layers 24] [--vocab 0] [--matmul xla,native] [--prompts 4]
      [--new_tokens 128] [--train_dir DIR] [--json out.json]

Trains a parallel-heads MTP model (Gloeckle et al. 2024, arXiv 2404.19737) on the
stdlib code corpus through the shared train loop (or loads the run in `--workdir`),
prints its training tokens and validation loss, then decodes validation-window
prompts greedily with lattice.decode.speculative.generate (heads draft n - 1 tokens,
one forward verifies) and with generate_plain (one token per forward), alternating in
the same process, best of `--repeats`. The key figure is the wall-clock ratio
`speedup`; outputs must be identical. `--vocab N` first trains a SentencePiece BPE
of N pieces on the same corpus (no download) so the unembedding is large.

`--matmul xla,native` (default) decodes once with XLA's dot for every projection and
once with kernels/skinny_cpu (LATTICE_SKINNY_MATMUL), in the same process; `speedup`
is the best speculative tokens/s over the best greedy tokens/s among them, so the
baseline is whichever plain decoder is faster here.

The default model: d_model 256, 24 layers (a trunk of 23 blocks), n = 2 heads, byte
vocabulary, 400 steps of 16 x 128 tokens (819K tokens; ~20 minutes on the 2-core
machine with other work running, 1 Dec; `--train_dir` keeps the run for
`--workdir`). Speculative decoding pays where a decoding step is bound by reading
the weights, as it is for the paper's 7B models; the model is sized so that its weights (77 MiB) stream from DRAM on every
step, well past the 32 MiB L3 of the machine these figures come from, and the one
extra head block is 1/24 of it (`weight_ratio` 1.05; the paper's n = 4 heads on
32-layer 7B models read 3/32 more). History of the default, each kept as flags:
  - d_model 64, 3 layers, n = 4 (`--d_model 64 --n_layers 3 --n 4 --steps 300`):
    a step costs its op count, not its weight reads, and the three extra full-block
    heads are 2x the plain step's weights (`weight_ratio` 2.0), so a verification
    forward cost 4.3-5.2x a plain step (0.35x, measured 2026-11-30);
  - d_model 256, 12 layers, n = 2 (`--n_layers 12`, the default until 2026-12-01):
    the weights (40 MiB) sit at the L3's size, so part of each step reads them from
    cache and the verification forward's second row shows in the time: 1.33-1.38x
    at a forward cost of ~1.37-1.44x (BENCHMARKS.md).
Three CPU changes make a 2-row verification forward cost about its weight reads
(each row computes exactly what a one-token step computes, so greedy output is
identical by construction): projections of <= 8 rows go to kernels/skinny_cpu (XLA
packs the weights of a 2..8-row dot, ~2x a one-row dot per weight read); the cache
attention is one native call per layer for all rows (kernels/skinny_cpu/
attention.py; XLA's ~8 ops per row and layer, run row by row, had made the 2-row
forward's op count and thread-pool traffic grow); the tied unembedding runs row by
row (XLA's 2-row version costs ~5x a one-row call in the profile). With the native
paths the verification forward runs about as many ops as a plain step (1,013 vs 962
in a profile, 30 Nov). Both decoders then read packed copies of the projection
kernels (lattice.decode.packed_weights, made once before timing; 64-column panels,
each one contiguous stream, the same bits): greedy tok/s +20% with 2 threads at 12
layers (same-process A/B, idle). At 24 layers, one thread (informal, 1 Dec, the
other core busy): one verification forward's marginal cost is 1.11x a plain step's
and the two prefills cost about the same (13.0 vs 12.3 ms for 32 prompt tokens).
On an older EPYC (Zen 1: AVX2, 8 MiB L3; measured 1 Dec, idle, BENCHMARKS.md's
tenth session) the same default model decodes at 126 greedy tok/s and reaches only
1.28x: a verification forward costs 1.41x a plain step there (not profiled); its
AVX2 packed path's 32-column passes later gave 1.43x there (informal). On an Intel
Xeon VM with AVX-512 (2 Dec, BENCHMARKS.md's eleventh session): 1.43-1.53x in seven
measured runs, 1.51 in one (~345-395 greedy tok/s), `forward_cost` 1.23-1.32; the
second row costs ~1.18x a one-row step's time there (perf of plain decoding at batch
2: the packed products 1.10x, the decode attention most of the rest). On an AMD EPYC
of family 26 with AVX-512 (2 Dec, BENCHMARKS.md's twelfth session): 1.48-1.61x in seven
measured runs (goal 1.50; met in six), `forward_cost` 1.15-1.25, the greedy baseline
353-452 tok/s. On an Intel Xeon of model 207 with a 260 MiB L3 (2 Dec, BENCHMARKS.md's
thirteenth session), where the 77 MiB of weights fit in the L3 but the packed products
run at the same ~23-26 GB/s from it as from DRAM: 1.29-1.48x in six of seven measured
runs and 1.68x in one whose greedy baseline was an outlier (241 tok/s against
280-355), `forward_cost` 1.13-1.47.
The prompt's prefill is part of both decoders' time: until 3 Dec its 32 rows went to
XLA's dot (~83 GFLOP/s) and XLA's masked attention over all S cache positions, and it
took 29-32 ms, ~15 plain steps, ~10% of plain decoding's 128 tokens and ~16% of
speculative decoding's (which takes ~67 forwards for them), so it alone pulled the
ratio down by ~4%. Prefill rows now take the native kernels too (packed products of
<= 64 rows, kernels/skinny_cpu/ops.py `MAX_PACKED_ROWS`; cached attention at any row
count): 16-18 ms, and on the eleventh session's Xeon kind (BENCHMARKS.md's sixteenth
session) 1.52-1.58x in three measured runs, `forward_cost` 1.20-1.25, against
1.50-1.54x before on the same model and machine.

On GPU/TPU, decoding is timed under `jax.default_matmul_precision('highest')` unless
`--matmul_precision` says otherwise: the greedy-identity guarantee holds under exact
float32 arithmetic, and with an H200's default TF32 passes the verification forward
and the one-token step rounded differently (`identical` false, BENCHMARKS.md). On CPU
the backend default already computes float32 exactly.

`--json PATH` writes {"speedup", "accepted_per_forward", "identical",
"forward_cost" (one speculative forward's wall time over one plain step's),
"weight_ratio" (parameters one speculative forward reads over one plain step's, a
count), "plain_tokens_per_s", "spec_tokens_per_s", "train_tokens", "val_loss", "n",
"d_model", "n_layers", "vocab_size", "matmul_precision" (null: the backend default),
...}.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile

import jax
import numpy as np

from benchmarks import machine
from kernels.skinny_cpu import ops as skinny_ops
from lattice import config as config_lib
from lattice import experiment
from lattice.data import pipeline, tokenizer as tokenizer_lib, tokenizer_train
from lattice.decode import speculative
from lattice.train import artifacts, loop


def train_config(args, tokenizer: str = 'byte') -> config_lib.Config:
  c = experiment.lm_config(args.d_model, args.n_layers, max(args.d_model // 16, 2),
                           args.seq_len, args.batch, args.steps, 3e-3,
                           max_len=max(args.seq_len, args.prompt_len + args.new_tokens + args.n),
                           mtp=dict(kind='parallel', n=args.n))
  c.data.tokenizer = tokenizer
  c.train.progress = False
  return config_lib.build(c)


def train_tokenizer(args, folder: str) -> str:
  """A SentencePiece BPE of `--vocab` pieces trained on the benchmark's corpus (no
  download); returns its `data.tokenizer` spec."""
  data_cfg = train_config(args).data
  _, spec = tokenizer_train.train(data_cfg, args.vocab, f'{folder}/spm.model',
                                  kind='spm-bpe', max_bytes=args.vocab_bytes)
  return spec


def weight_ratio(params, n: int) -> float:
  """Parameters a verification forward reads over those a plain step reads: the
  memory-bound floor of `forward_cost` (a count from the parameter tree, not a
  timing). A plain step reads the trunk, head 1's block and the unembedding; a
  verification forward reads every head's block and the unembedding twice (the
  main head's rows, then the drafts' rows after verification)."""
  size = lambda t: sum(x.size for x in jax.tree.leaves(t))
  heads = sum(size(params[f'heads_{i}']) for i in range(n))
  rest = sum(size(v) for k, v in params.items() if not k.startswith('heads_'))
  named = lambda word: sum(x.size for path, x in jax.tree_util.tree_flatten_with_path(
      params)[0] if word in jax.tree_util.keystr(path))
  unembed = named("'unembed'") or named("'embedding'")  # tied: the embedding table
  return (rest + heads + unembed) / (rest + heads / n)


def matmul_precision(arg: str, backend: str) -> str | None:
  """The `jax.default_matmul_precision` decoding is timed under: `arg` ('auto':
  'highest' off CPU, None, the backend default, on CPU). Raises SystemExit naming the
  flag for a value that is not auto, default, high or highest."""
  if arg == 'auto':
    return None if backend == 'cpu' else 'highest'
  if arg not in ('default', 'high', 'highest'):
    raise SystemExit(f'--matmul_precision: {arg!r} is not auto, default, high or highest')
  return arg


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--workdir', default=None,
                      help='a finished lattice run with model.mtp heads (else train one)')
  parser.add_argument('--train_dir', default=None,
                      help='train into this folder and keep the run (reuse it with '
                           '--workdir); default: a temporary folder')
  parser.add_argument('--n', type=int, default=2, help='parallel heads when training')
  parser.add_argument('--d_model', type=int, default=256)
  parser.add_argument('--n_layers', type=int, default=24)
  parser.add_argument('--seq_len', type=int, default=128)
  parser.add_argument('--batch', type=int, default=16)
  parser.add_argument('--steps', type=int, default=400)
  parser.add_argument('--vocab', type=int, default=0,
                      help='train a SentencePiece BPE of this many pieces on the corpus '
                           '(0: the byte vocabulary)')
  parser.add_argument('--vocab_bytes', type=int, default=20_000_000,
                      help='corpus bytes the BPE is trained on')
  parser.add_argument('--prompts', type=int, default=4)
  parser.add_argument('--prompt_len', type=int, default=32)
  parser.add_argument('--new_tokens', type=int, default=128)
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--matmul', default='xla,native',
                      help='projection paths to time, comma-separated: xla (XLA\'s dot) and '
                           'native (kernels/skinny_cpu, CPU); the speedup is the best '
                           'speculative over the best greedy among them')
  parser.add_argument('--matmul_precision', default='auto',
                      help="jax.default_matmul_precision while decoding is timed: 'auto' is "
                           "'highest' on GPU/TPU (their default TF32 / bf16 passes round the "
                           "n-token verification forward and the one-token step differently, "
                           "so greedy outputs can differ: the H200 row of BENCHMARKS.md) and "
                           "the backend default on CPU; or default / high / highest")
  parser.add_argument('--json', default=None)
  args = parser.parse_args(argv)
  mach = machine.describe()
  print(machine.line(mach))

  if args.workdir:
    cfg, params = artifacts.load_run(args.workdir)
    final = json.loads(open(f'{args.workdir}/final_metrics.json').read())
    train_tokens, val_loss = final['tokens'], final.get('val_loss', float('nan'))
    batches = pipeline.make_eval_batches(
        cfg.data, tokenizer_lib.make_tokenizer(cfg.data.tokenizer), 4)
  else:
    with tempfile.TemporaryDirectory() as tmp:
      folder = args.train_dir or tmp
      tokenizer = train_tokenizer(args, folder) if args.vocab else 'byte'
      cfg = train_config(args, tokenizer)
      out = loop.train_and_evaluate(cfg, folder)
      batches = pipeline.make_eval_batches(
          cfg.data, tokenizer_lib.make_tokenizer(tokenizer), 4)
    cfg, params = out['setup'].cfg, out['state'].params
    train_tokens, val_loss = out['tokens'], out['val_loss']
  print(f'model: mtp={cfg.model.mtp.kind} n={cfg.model.mtp.n} depth={cfg.model.mtp.depth} '
        f'd_model={cfg.model.d_model} n_layers={cfg.model.n_layers} vocab '
        f'{cfg.model.vocab_size}; trained on {train_tokens} tokens of {cfg.data.source}, '
        f'val loss {val_loss:.4f}')
  rows = np.concatenate([b['inputs'] for b in batches])
  prompts = [rows[i:i + 1, :args.prompt_len] for i in range(args.prompts)]
  precision = matmul_precision(args.matmul_precision, jax.default_backend())
  paths = {}
  for path in args.matmul.split(','):
    if path == 'native' and (not skinny_ops.best_isa() or jax.default_backend() != 'cpu'):
      paths[path] = {'skipped': 'kernels/skinny_cpu is CPU-only and must be built'}
      continue
    os.environ['LATTICE_SKINNY_MATMUL'] = '1' if path == 'native' else '0'
    jax.clear_caches()  # the path is chosen when a function is traced
    with (jax.default_matmul_precision(precision) if precision
          else contextlib.nullcontext()):
      paths[path] = speculative.compare_with_plain({'params': params}, cfg.model, prompts,
                                                   args.new_tokens, repeats=args.repeats)
  done = {k: v for k, v in paths.items() if 'skipped' not in v}
  best_plain = max(done, key=lambda k: done[k]['plain_tokens_per_s'])
  best_spec = max(done, key=lambda k: done[k]['spec_tokens_per_s'])
  res = {**done[best_spec],
         'speedup': done[best_spec]['spec_tokens_per_s'] / done[best_plain]['plain_tokens_per_s'],
         'plain_tokens_per_s': done[best_plain]['plain_tokens_per_s'],
         'identical': all(v['identical'] for v in done.values()),
         'plain_path': best_plain, 'spec_path': best_spec}
  print(f'{"matmul path":<13}{"greedy tok/s":>14}{"speculative tok/s":>19}{"tokens/forward":>16}'
        f'{"forward cost":>14}  identical')
  for k, v in done.items():
    print(f'{k:<13}{v["plain_tokens_per_s"]:>14.1f}{v["spec_tokens_per_s"]:>19.1f}'
          f'{v["accepted_per_forward"]:>16.2f}{v["forward_cost"]:>13.2f}x  {v["identical"]}')
  print(f'speedup {res["speedup"]:.2f}x (speculative on {best_spec} over the faster greedy, '
        f'on {best_plain}), accepted tokens per forward {res["accepted_per_forward"]:.2f} '
        f'(max {speculative.n_drafts(cfg.model) + 1}), identical outputs: {res["identical"]}; '
        f'goal max(1.5, 0.8 x accepted) = '
        f'{max(1.5, 0.8 * res["accepted_per_forward"]):.2f}')
  ratio = weight_ratio(params, cfg.model.mtp.n) if cfg.model.mtp.kind == 'parallel' else None
  print(f'one speculative forward costs {res["forward_cost"]:.2f}x one plain decoding step'
        + ('' if ratio is None else f' (it reads {ratio:.2f}x the weights)'))
  summary = {**res, 'paths': paths, 'weight_ratio': ratio, 'd_model': cfg.model.d_model,
             'n_layers': cfg.model.n_layers, 'vocab_size': cfg.model.vocab_size,
             'params': int(sum(x.size for x in jax.tree.leaves(params))),
             'train_tokens': int(train_tokens), 'val_loss': float(val_loss),
             'n': cfg.model.mtp.n, 'kind': cfg.model.mtp.kind,
             'skinny_isa': skinny_ops.best_isa(), 'matmul_precision': precision,
             'backend': jax.default_backend(), 'device': jax.devices()[0].device_kind,
             'machine': machine.finish(mach)}
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(summary, f, indent=1)
  return summary


if __name__ == '__main__':
  main()

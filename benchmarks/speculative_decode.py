r"""Self-speculative decoding vs plain greedy decoding of the same model (batch 1).

  python -m benchmarks.speculative_decode [--n 4] [--steps 300] [--workdir RUN]
      [--prompts 4] [--new_tokens 128] [--json out.json]

Trains a parallel-heads MTP model (Gloeckle et al. 2024, arXiv 2404.19737) on the
stdlib code corpus through the shared train loop (or loads the run in `--workdir`),
prints its training tokens and validation loss, then decodes validation-window
prompts greedily with lattice.decode.speculative.generate (heads draft n - 1 tokens,
one forward verifies) and with generate_plain (one token per forward), alternating in
the same process, best of `--repeats`. The key figure is the wall-clock ratio
`speedup`; outputs must be identical. Goal: >= 2.5x at n = 4 on code (paper: up to
3x for 7B models); a tiny CPU model accepts fewer drafts and its forward cost is
overhead-dominated, so expect less there.

`--json PATH` writes {"speedup", "accepted_per_forward", "identical",
"forward_cost" (one speculative forward's wall time over one plain step's),
"plain_tokens_per_s", "spec_tokens_per_s", "train_tokens", "val_loss", "n", ...}.
"""

from __future__ import annotations

import argparse
import json
import tempfile

import jax
import numpy as np

from lattice import config as config_lib
from lattice import experiment
from lattice.data import pipeline, tokenizer as tokenizer_lib
from lattice.decode import speculative
from lattice.train import artifacts, loop


def train_config(args) -> config_lib.Config:
  c = experiment.lm_config(args.d_model, args.n_layers, max(args.d_model // 16, 2),
                           args.seq_len, args.batch, args.steps, 3e-3,
                           max_len=max(args.seq_len, args.prompt_len + args.new_tokens + args.n),
                           mtp=dict(kind='parallel', n=args.n))
  c.train.progress = False
  return config_lib.build(c)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--workdir', default=None,
                      help='a finished lattice run with model.mtp heads (else train one)')
  parser.add_argument('--n', type=int, default=4, help='parallel heads when training')
  parser.add_argument('--d_model', type=int, default=64)
  parser.add_argument('--n_layers', type=int, default=3)
  parser.add_argument('--seq_len', type=int, default=128)
  parser.add_argument('--batch', type=int, default=16)
  parser.add_argument('--steps', type=int, default=300)
  parser.add_argument('--prompts', type=int, default=4)
  parser.add_argument('--prompt_len', type=int, default=32)
  parser.add_argument('--new_tokens', type=int, default=128)
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--json', default=None)
  args = parser.parse_args(argv)

  if args.workdir:
    cfg, params = artifacts.load_run(args.workdir)
    final = json.loads(open(f'{args.workdir}/final_metrics.json').read())
    train_tokens, val_loss = final['tokens'], final.get('val_loss', float('nan'))
  else:
    with tempfile.TemporaryDirectory() as tmp:
      out = loop.train_and_evaluate(train_config(args), tmp)
    cfg, params = out['setup'].cfg, out['state'].params
    train_tokens, val_loss = out['tokens'], out['val_loss']
  print(f'model: mtp={cfg.model.mtp.kind} n={cfg.model.mtp.n} depth={cfg.model.mtp.depth} '
        f'd_model={cfg.model.d_model} n_layers={cfg.model.n_layers}; trained on '
        f'{train_tokens} tokens of {cfg.data.source}, val loss {val_loss:.4f}')
  batches = pipeline.make_eval_batches(cfg.data, tokenizer_lib.make_tokenizer(cfg.data.tokenizer), 4)
  rows = np.concatenate([b['inputs'] for b in batches])
  prompts = [rows[i:i + 1, :args.prompt_len] for i in range(args.prompts)]
  res = speculative.compare_with_plain({'params': params}, cfg.model, prompts,
                                       args.new_tokens, repeats=args.repeats)
  print(f'{"decoder":<14}{"tokens/s":>12}')
  print(f'{"greedy":<14}{res["plain_tokens_per_s"]:>12.1f}')
  print(f'{"speculative":<14}{res["spec_tokens_per_s"]:>12.1f}')
  print(f'speedup {res["speedup"]:.2f}x, accepted tokens per forward '
        f'{res["accepted_per_forward"]:.2f} (max {speculative.n_drafts(cfg.model) + 1}), '
        f'identical outputs: {res["identical"]}')
  print(f'one speculative forward costs {res["forward_cost"]:.2f}x one plain decoding step')
  summary = {**res, 'train_tokens': int(train_tokens), 'val_loss': float(val_loss),
             'n': cfg.model.mtp.n, 'kind': cfg.model.mtp.kind,
             'backend': jax.default_backend(), 'device': jax.devices()[0].device_kind}
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(summary, f, indent=1)
  return summary


if __name__ == '__main__':
  main()

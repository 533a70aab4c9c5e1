"""Serving throughput: continuous batching vs one-at-a-time, in the same run.

  python -m benchmarks.serve_throughput [--json out.json] [--size tiny|small]
      [--slots 32] [--requests 64] [--max-tokens 32]

Two servers over the same random-init model (a run of `lattice serve`'s stack:
uvicorn + FastAPI + the engine), both warmed up (every shape compiled) before
timing: one with `--slots` decode slots, one with a single slot (requests served
one at a time). At concurrency 1, 8 and 32, `--requests` completions (greedy,
`--max-tokens` each, EOS masked off by a regex so every request generates exactly
that many tokens) are sent from that many client threads with the official `openai`
package. Key figure: tokens/s of continuous batching over one-at-a-time at each
concurrency, measured in this process.

JSON fields: {"size", "slots", "max_tokens", "requests", "rows": [{"concurrency",
"batched_req_s", "batched_tok_s", "single_req_s", "single_tok_s", "speedup"}]}.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import time

import flax.linen as nn
import jax
import jax.numpy as jnp

from lattice import config as config_lib
from lattice.nn import transformer
from lattice.serve import server as server_lib

SIZES = {
    'tiny': {'d_model': 32, 'n_layers': 2, 'max_len': 128,
             'attention': {'n_heads': 4, 'n_kv_heads': 2}},
    'small': {'d_model': 256, 'n_layers': 6, 'max_len': 512,
              'attention': {'n_heads': 8, 'n_kv_heads': 4}},
}
CONCURRENCY = (1, 8, 32)


def _model(size: str):
  cfg = config_lib.build({'model': {**SIZES[size], 'vocab_size': 272},
                          'data': {'seq_len': 16}}).model
  variables = nn.unbox(transformer.Transformer(cfg).init(
      jax.random.key(0), jnp.zeros((1, 4), jnp.int32)))
  return cfg, variables


def _measure(url: str, concurrency: int, requests: int, max_tokens: int) -> dict:
  import openai  # pylint: disable=g-import-not-at-top
  client = openai.OpenAI(base_url=url + '/v1', api_key='unused', max_retries=0,
                         timeout=600)

  def one(i: int) -> int:
    out = client.completions.create(
        model='m', prompt=f'request {i}: ', max_tokens=max_tokens, temperature=0,
        extra_body={'guided_regex': f'[a-z ]{{{max_tokens}}}'})
    return out.usage.completion_tokens

  start = time.perf_counter()
  with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
    tokens = sum(pool.map(one, range(requests)))
  seconds = time.perf_counter() - start
  return {'req_s': requests / seconds, 'tok_s': tokens / seconds}


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--size', choices=tuple(SIZES), default='small')
  parser.add_argument('--slots', type=int, default=32)
  parser.add_argument('--requests', type=int, default=64)
  parser.add_argument('--max-tokens', type=int, default=32)
  parser.add_argument('--json', default=None)
  args = parser.parse_args(argv)
  cfg, variables = _model(args.size)
  servers = {}
  for kind, slots in (('batched', args.slots), ('single', 1)):
    served = server_lib.local_model('m', variables, cfg, slots=slots, warmup=True)
    servers[kind] = server_lib.Server([served]).start()
  rows = []
  try:
    for c in CONCURRENCY:
      for s in servers.values():  # compile the constraint once per server
        _measure(s.url, 1, 1, args.max_tokens)
      row = {'concurrency': c}
      for kind, s in servers.items():
        m = _measure(s.url, c, args.requests, args.max_tokens)
        row[f'{kind}_req_s'], row[f'{kind}_tok_s'] = m['req_s'], m['tok_s']
      row['speedup'] = row['batched_tok_s'] / row['single_tok_s']
      rows.append(row)
  finally:
    for s in servers.values():
      s.close()
  print(f'serve throughput ({args.size} model, {args.slots} slots vs 1, '
        f'{args.requests} requests x {args.max_tokens} tokens, '
        f'{jax.default_backend()})')
  print('| concurrency | batched req/s | batched tok/s | one-at-a-time req/s | '
        'one-at-a-time tok/s | speedup |')
  print('|---|---|---|---|---|---|')
  for r in rows:
    print(f'| {r["concurrency"]} | {r["batched_req_s"]:.2f} | {r["batched_tok_s"]:.1f} | '
          f'{r["single_req_s"]:.2f} | {r["single_tok_s"]:.1f} | {r["speedup"]:.2f}x |')
  result = {'size': args.size, 'slots': args.slots, 'max_tokens': args.max_tokens,
            'requests': args.requests, 'backend': jax.default_backend(), 'rows': rows}
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(result, f, indent=1)
  return result


if __name__ == '__main__':
  main()

r"""Constrained decoding: per-token cost of the in-graph mask, build time, and engines compared.

  python -m benchmarks.constrained_decode [--batch 1,8] [--new_tokens 128] [--json out.json]
  python -m benchmarks.constrained_decode --compare_only --schemas DIR [--sample 300]
      [--engines lattice,llguidance,xgrammar,outlines] [--json out.json]

Engine comparison (`benchmarks.constrained_compare`, engines in
`benchmarks.constrained_engines`): every engine compiles the same schemas for the
same byte vocabulary, each in a worker process with a per-schema timeout, then
walks its own masks at random; finished outputs are checked with `jsonschema` and
its format checker. Printed per subset and engine: coverage %, compile ms median
and p95, host-side mask µs per token, invalid and non-UTF-8 outputs; then the
same as one markdown table (for BENCHMARKS.md). Each worker compiles one small
warm-up schema first, so no engine's first timed compile pays its imports. Without
`--schemas` it runs on the committed hand-written set
(`benchmarks/data/constrained_schemas.json`: the keyword groups of
tests/jsonschema_test.py, the tool-call schema, 20 optional properties, maxLength
5000, a pydantic model). `--schemas DIR`: each subfolder of DIR is a subset of
one-schema `.json` files (JSONSchemaBench's `data/<subset>/` layout), `--sample N`
seeded per subset. Missing engines (`pip install 'lattice[bench]'`) are skipped.

Same process, same random model (d_model 128, 2 layers, byte vocabulary padded to
384), same prompts and length: `lattice.decode.sampling.generate` without and with
`constraint=` the tool-call schema (12 tools, `lattice.data.tasks.toolcalls`), at
temperature 1. After a compile+warmup call each, the two are timed round-robin (so
load on a shared machine hits them alike); the fastest of `--repeats` calls (the
least disturbed; medians are reported too) gives the mask overhead per step is (constrained - unconstrained) / new_tokens at
each batch size (a step masks B rows with one [B, V] gather), per token that / B.
`mask_only_us_per_step` times the same mask, sample and state update in a bare
`lax.scan` without a model, a lower-noise view of the same cost at batch 1.

Index build time per schema: schema -> regex -> minimal DFA (`compile_s`), DFA ->
token tables (`index_s`), for the tool-call schema and seeded random schemas.
`valid_fraction`: share of constrained outputs (largest batch, every schema above)
that parse and validate (must be 1); `unconstrained_valid_fraction`: the same for
the tool-call schema without the constraint.

Goal: mask overhead < 100 µs per token on CPU (anchors: llguidance ~50 µs per
mask, XGrammar). `--json PATH` writes {"mask_overhead_us_per_token" (batch 1),
"valid_fraction", "unconstrained_valid_fraction", "mask_only_us_per_step",
"rows", "schemas", settings, "comparison": {subset: {engine: {"coverage",
"compile_ms_median", "compile_ms_p95", "mask_us_median", "outputs_checked",
"invalid_outputs", "non_utf8_outputs", "schemas_with_invalid",
"schemas_with_warnings" (lattice: compiled with optional members shed past
`Options.max_object_states`, see `TokenIndex.warnings`), "top_errors"}}}}.
"""

from __future__ import annotations

import argparse
import functools
import json
import random
import time
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import constrained_compare, constrained_engines, machine, timing
from lattice import config as config_lib
from lattice.agents import toolcall
from lattice.data import tokenizer as tok_lib
from lattice.data.tasks import toolcalls
from lattice.decode import constraints, sampling
from lattice.decode import schema as schema_lib
from lattice.nn import transformer

V = 384


def _model(max_len: int) -> config_lib.ModelConfig:
  return config_lib.build({
      'model': {'d_model': 128, 'n_layers': 2, 'max_len': max_len, 'vocab_size': V,
                'attention': {'n_heads': 4}},
      'data': {'seq_len': 64, 'batch_size': 1}}).model


def _texts(tokens) -> list[str]:
  tok = tok_lib.ByteTokenizer()
  out = []
  for row in np.asarray(tokens).tolist():
    row = row[:row.index(tok_lib.EOS_ID)] if tok_lib.EOS_ID in row else row
    out.append(tok.decode(row))
  return out


def build_times(n_random: int) -> list[dict]:
  schemas = [('toolcall', toolcalls.call_schema())] + [
      (f'random_{i}', schema_lib.random_schema(random.Random(i), depth=3))
      for i in range(n_random)]
  rows = []
  for name, schema in schemas:
    t0 = time.perf_counter()
    # As `for_schema` on the byte vocabulary: counted loops kept as counters.
    dfa = constraints.compile_schema_report(schema, counted=True)[0]
    t1 = time.perf_counter()
    index = constraints.build_index(dfa, constraints.byte_vocab(V), classes=True)
    t2 = time.perf_counter()
    rows.append({'schema': name, 'dfa_states': dfa.n_states,
                 'table_states': index.n_states, 'compile_s': t1 - t0,
                 'index_s': t2 - t1, 'min_tokens': index.min_tokens,
                 'schema_json': schema})
  return rows


def mask_only(index: constraints.Index, steps: int, repeats: int) -> float:
  """µs per step of mask + argmax + state update vs argmax alone, batch 1."""
  logits_NxV = jax.random.normal(jax.random.key(0), (steps, 1, V))

  def run(masked):
    def scan(index, x):
      return jax.lax.scan(functools.partial(body, index), index.init_state(1), x)

    def body(index, state_B, logits_BxV):
      if masked:
        logits_BxV = jnp.where(index.need_rows(state_B) < constraints.INF, logits_BxV,
                               -jnp.inf)
      token_B = jnp.argmax(logits_BxV, axis=-1)
      if masked:
        state_B = index.advance(state_B, token_B)
      return state_B, token_B
    return jax.jit(scan)

  masked, plain = run(True), run(False)
  t = timing.round_robin({'m': lambda: masked(index, logits_NxV),
                    'p': lambda: plain(index, logits_NxV)}, repeats)
  return (t['m']['min'] - t['p']['min']) / steps * 1e6


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--batch', default='1,8')
  parser.add_argument('--new_tokens', type=int, default=128)
  parser.add_argument('--repeats', type=int, default=15)
  parser.add_argument('--random_schemas', type=int, default=8)
  parser.add_argument('--json', default=None)
  parser.add_argument('--schemas', default=None, help='JSONSchemaBench-style data dir')
  parser.add_argument('--sample', type=int, default=300, help='schemas per subset')
  parser.add_argument('--engines', default='lattice,llguidance,xgrammar,outlines')
  parser.add_argument('--walks', type=int, default=5, help='random walks per schema')
  parser.add_argument('--max_tokens', type=int, default=256)
  parser.add_argument('--timeout', type=float, default=30.0, help='s per schema')
  parser.add_argument('--compare_only', action='store_true')
  args = parser.parse_args(argv)
  mach = machine.describe()
  print(machine.line(mach))
  engines = [e for e in args.engines.split(',') if e in constrained_engines.available()]
  path = args.schemas or Path(__file__).parent / 'data' / 'constrained_schemas.json'
  comparison = constrained_compare.compare(
      constrained_compare.load_schemas(path, args.sample), engines, args.walks,
      args.max_tokens, args.timeout)
  print(constrained_compare.markdown_table(comparison))
  if args.compare_only:
    if args.json:
      with open(args.json, 'w') as f:
        json.dump({'comparison': comparison, 'engines': engines, 'schemas': str(path),
                   'sample': args.sample, 'walks': args.walks,
                   'machine': machine.finish(mach)}, f, indent=1)
    return
  N = args.new_tokens
  examples = toolcalls.generate(max(int(b) for b in args.batch.split(',')), 0, 'test')
  tok = tok_lib.ByteTokenizer()
  prompts_all = np.stack([tok.encode(toolcalls.prompt_of(e.request), bos=True)
                          for e in examples])
  cfg = _model(prompts_all.shape[1] + N)
  variables = nn.unbox(transformer.Transformer(cfg).init(jax.random.key(0),
                                                         prompts_all[:1]))
  index = toolcall.call_constraint(V)
  schemas = build_times(args.random_schemas)
  for r in schemas:
    print(f"build {r['schema']:>10}: {r['dfa_states']:4d} DFA states, compile "
          f"{r['compile_s'] * 1e3:7.1f} ms, index {r['index_s'] * 1e3:7.1f} ms")
  s = sampling.SamplingConfig(1.0)
  rows, valid, valid_free = [], [], []
  for B in (int(b) for b in args.batch.split(',')):
    prompts = prompts_all[:B]
    common = dict(model_cfg=cfg, max_new_tokens=N, sampling=s, eos_id=tok_lib.EOS_ID,
                  pad_id=tok_lib.PAD_ID)
    free = lambda: sampling.generate(variables, prompts, jax.random.key(1), **common)
    con = lambda: sampling.generate(variables, prompts, jax.random.key(1),
                                    constraint=index, **common)
    t = timing.round_robin({'free': free, 'con': con}, args.repeats)
    step = (t['con']['min'] - t['free']['min']) / N * 1e6
    step_median = (t['con']['median'] - t['free']['median']) / N * 1e6
    rows.append({'batch': B, 'free_s': t['free'], 'constrained_s': t['con'],
                 'overhead_us_per_step': step, 'overhead_us_per_token': step / B,
                 'overhead_us_per_token_median': step_median / B,
                 'free_us_per_token': t['free']['min'] / N / B * 1e6})
    print(f'batch {B}: unconstrained {t["free"]["min"] * 1e3:.1f} ms, constrained '
          f'{t["con"]["min"] * 1e3:.1f} ms (min) for {N} steps -> mask overhead '
          f'{step:.1f} µs/step, {step / B:.1f} µs/token (medians: '
          f'{step_median / B:.1f} µs/token); {t["free"]["min"] / N / B * 1e6:.0f} '
          f'µs/token unconstrained')
    schema = toolcalls.call_schema()
    valid_free += [schema_lib.parses_and_validates(x, schema) for x in _texts(free())]
  # Validity over every benchmarked schema; tables padded alike share one compile.
  for r in schemas:
    schema = r.pop('schema_json')
    if r['min_tokens'] > N:
      continue
    padded = constraints.for_schema(schema, constraints.byte_vocab(V),
                                    state_multiple=1024)
    out = sampling.generate(variables, prompts_all, jax.random.key(2), model_cfg=cfg,
                            max_new_tokens=N, sampling=s, constraint=padded,
                            pad_id=tok_lib.PAD_ID)
    valid += [schema_lib.parses_and_validates(x, schema) for x in _texts(out)]
  only = mask_only(index, N, args.repeats)
  print(f'mask only (no model, batch 1): {only:.1f} µs/step')
  summary = {'mask_overhead_us_per_token': rows[0]['overhead_us_per_token'],
             'mask_only_us_per_step': only,
             'valid_fraction': float(np.mean(valid)), 'valid_samples': len(valid),
             'unconstrained_valid_fraction': float(np.mean(valid_free)),
             'index_build_s_toolcall': schemas[0]['compile_s'] + schemas[0]['index_s']}
  print(json.dumps(summary, indent=1))
  if args.json:
    with open(args.json, 'w') as f:
      json.dump({**summary, 'rows': rows, 'schemas': schemas, 'new_tokens': N,
                 'comparison': comparison, 'engines': engines, 'machine': machine.finish(mach),
                 'device': jax.devices()[0].device_kind, 'backend': jax.default_backend()},
                f, indent=1)


if __name__ == '__main__':
  main()

r"""Why lattice fails or compiles slowly on a schema collection: a per-schema census.

  python -m benchmarks.constrained_census --schemas DIR [--cap 5] [--sample N]
      [--json out.json]

In one process (no worker per schema, so figures are lower bounds on what a fresh
process pays for imports), for every `.json` schema under each subfolder of DIR
(JSONSchemaBench's `data/<subset>/` layout): the time of each compile phase —
schema -> regex AST (`ast_s`), AST -> minimal DFA (`dfa_s`), DFA -> token tables
(`index_s`), the CPU time of all three (`cpu_s`: what a busy machine inflates
least) — the DFA's states, the compiler's warnings (optional members shed past
`Options.max_object_states`), and on failure the error (its first line). A
schema that runs past `--cap` seconds (wall clock, in a forked child) counts as
a time-out. Printed: per subset coverage and median/p95 total compile ms, then the
failure buckets (error text with pointers stripped) and the slowest schemas with
their phase split, across all subsets. Timings on a loaded machine are not
measurements; the buckets are what this tool is for.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import multiprocessing as mp
import re
import statistics
import time
from pathlib import Path

from benchmarks import constrained_compare
from lattice.decode import automaton, constraints


def _phases(schema) -> dict:
  rec = {'ok': False}
  try:
    c0 = time.process_time()
    t0 = time.perf_counter()
    node, warnings = constraints.schema_regex_report(schema)
    rec['warnings'] = list(warnings)
    t1 = time.perf_counter()
    dfa = automaton.to_dfa(node)
    t2 = time.perf_counter()
    constraints.build_index(dfa)
    t3 = time.perf_counter()
    rec.update(ok=True, ast_s=t1 - t0, dfa_s=t2 - t1, index_s=t3 - t2,
               cpu_s=time.process_time() - c0, states=dfa.n_states)
  except Exception as e:  # pylint: disable=broad-except
    rec['error'] = f'{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ""}'
  return rec


def _child(conn, schema):
  conn.send(_phases(schema))


def census_one(schema, cap: float) -> dict:
  """{'ok', 'ast_s', 'dfa_s', 'index_s', 'states', 'error'} for one schema, in a
  forked child killed after `cap` seconds (a compile stuck in C code included)."""
  ctx = mp.get_context('fork')
  parent, child = ctx.Pipe()
  proc = ctx.Process(target=_child, args=(child, schema))
  proc.start()
  try:
    if parent.poll(cap):
      return parent.recv()
    return {'ok': False, 'error': f'timeout (> {cap:g} s)'}
  except EOFError:
    return {'ok': False, 'error': 'crash'}
  finally:
    proc.kill()
    proc.join()


def bucket(error: str) -> str:
  """The error with JSON pointers, numbers and quoted values blurred, for grouping."""
  e = re.sub(r"(?<=\s)/\S*", '/…', error)
  e = re.sub(r"'[^']*'", "'…'", e)
  return re.sub(r'\d+', 'N', e)[:110]


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--schemas', required=True)
  p.add_argument('--cap', type=float, default=5.0)
  p.add_argument('--sample', type=int, default=0)
  p.add_argument('--slowest', type=int, default=25)
  p.add_argument('--json', default=None)
  p.add_argument('--verbose', action='store_true')
  p.add_argument('--subsets', default='', help='comma-separated subset names')
  args = p.parse_args(argv)
  subsets = constrained_compare.load_schemas(Path(args.schemas), args.sample)
  if args.subsets:
    subsets = {k: v for k, v in subsets.items() if k in args.subsets.split(',')}
  constraints.for_schema({'type': 'string'})  # Warm-up.
  all_recs = []
  for subset, items in subsets.items():
    recs = []
    for name, schema in items:
      rec = census_one(schema, args.cap)
      rec.update(subset=subset, schema=name)
      if args.verbose:
        t = sum(rec.get(k, 0) for k in ('ast_s', 'dfa_s', 'index_s'))
        print(f'  {subset}/{name}: {t * 1e3:.0f} ms {rec.get("error", "")}'
              f'{" (warnings: %d)" % len(rec["warnings"]) if rec.get("warnings") else ""}',
              flush=True)
      recs.append(rec)
    ok = sorted(r['ast_s'] + r['dfa_s'] + r['index_s'] for r in recs if r['ok'])
    med = statistics.median(ok) * 1e3 if ok else math.nan
    p95 = ok[math.ceil(0.95 * len(ok)) - 1] * 1e3 if ok else math.nan
    cpu = [r['cpu_s'] for r in recs if r['ok']]
    cpu_med = statistics.median(cpu) * 1e3 if cpu else math.nan
    shed = sum(1 for r in recs if r.get('warnings'))
    print(f'{subset:>16}: {len(ok)}/{len(recs)} compiled, median {med:.1f} ms, '
          f'p95 {p95:.1f} ms (CPU median {cpu_med:.1f} ms), warnings in {shed}',
          flush=True)
    all_recs += recs
  print('\nfailure buckets:')
  counts = collections.Counter(bucket(r['error']) for r in all_recs if not r['ok'])
  for b, n in counts.most_common():
    print(f'{n:5d}  {b}')
  print('\nslowest compiled (total ms: ast / dfa / index, states):')
  done = sorted((r for r in all_recs if r['ok']),
                key=lambda r: -(r['ast_s'] + r['dfa_s'] + r['index_s']))
  for r in done[:args.slowest]:
    tot = r['ast_s'] + r['dfa_s'] + r['index_s']
    print(f"{tot * 1e3:8.1f}  {r['ast_s'] * 1e3:7.1f} / {r['dfa_s'] * 1e3:7.1f} / "
          f"{r['index_s'] * 1e3:7.1f}  {r['states']:6d}  {r['subset']}/{r['schema']}")
  if args.json:
    Path(args.json).write_text(json.dumps(all_recs, indent=1))


if __name__ == '__main__':
  main()

"""Fingerprints of compiled JSON schemas, to check that a compiler change is exact.

For every schema `benchmarks.constrained_decode --compare_only` samples (the same
`load_schemas(DIR, sample)` draw), compiles it as the benchmark's lattice engine
does (`constraints.for_schema` on the byte vocabulary) and records a SHA-256 of
the automaton (`compile_schema_report(counted=True)`: every table of the `Dfa`
or `CountedDfa`), of the token index's tables, the warnings, and the error (type
and message) where it fails. Two dumps (old and new code) are then compared:

  PYTHONPATH=. python scripts/schema_dump.py dump --schemas DIR --out old.json
  PYTHONPATH=. python scripts/schema_dump.py dump --schemas DIR --out new.json
  python scripts/schema_dump.py compare old.json new.json

`compare` exits 1 and lists the schemas whose fingerprints differ. Subsets run in
one process each (as the benchmark's workers do), after its warm-up schema.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import multiprocessing as mp
import sys
from pathlib import Path

import numpy as np


def _digest(obj) -> str:
  """SHA-256 of the numpy arrays (shape, dtype, bytes) and other fields of `obj`."""
  h = hashlib.sha256()

  def feed(x):
    if isinstance(x, np.ndarray) or hasattr(x, '__array__') and not isinstance(x, (int, float)):
      a = np.asarray(x)
      h.update(repr((a.shape, a.dtype.str)).encode())
      h.update(np.ascontiguousarray(a).tobytes())
    else:
      h.update(repr(x).encode())

  if dataclasses.is_dataclass(obj):
    for f in dataclasses.fields(obj):
      h.update(f.name.encode())
      feed(getattr(obj, f.name))
  else:
    feed(obj)
  return h.hexdigest()


def _subset(args) -> dict:
  items, = args
  from benchmarks import constrained_compare as cc  # pylint: disable=g-import-not-at-top
  from benchmarks import constrained_engines as ce  # pylint: disable=g-import-not-at-top
  from lattice.decode import constraints  # pylint: disable=g-import-not-at-top
  engine = ce.ENGINES['lattice']()
  engine.compile(cc._WARMUP)  # pylint: disable=protected-access
  out = {}
  for name, schema in items:
    rec = {}
    try:
      dfa, warnings = constraints.compile_schema_report(schema, counted=True)
      rec['dfa'] = _digest(dfa)
      rec['warnings'] = list(warnings)
      index = engine.compile(schema)
      rec['index'] = _digest(index)
      rec['index_warnings'] = list(index.warnings)
    except Exception as e:  # pylint: disable=broad-except
      rec['error'] = f'{type(e).__name__}: {e}'
    out[name] = rec
  return out


def dump(schemas: str, sample: int, out: str) -> None:
  from benchmarks import constrained_compare as cc  # pylint: disable=g-import-not-at-top
  subsets = cc.load_schemas(Path(schemas), sample)
  ctx = mp.get_context('spawn')
  result = {}
  for sub, items in subsets.items():
    with ctx.Pool(1) as pool:
      got = pool.map(_subset, [(items,)])[0]
    result[sub] = got
    print(f'{sub}: {len(got)} schemas, {sum("error" in r for r in got.values())} errors',
          flush=True)
  Path(out).write_text(json.dumps(result, indent=1, sort_keys=True))


def compare(a: str, b: str) -> int:
  old, new = json.loads(Path(a).read_text()), json.loads(Path(b).read_text())
  n, diff = 0, []
  for sub in sorted(set(old) | set(new)):
    o, w = old.get(sub, {}), new.get(sub, {})
    for name in sorted(set(o) | set(w)):
      n += 1
      if o.get(name) != w.get(name):
        diff.append((sub, name, o.get(name), w.get(name)))
  for sub, name, x, y in diff:
    print(f'DIFF {sub}/{name}:\n  old {x}\n  new {y}')
  print(f'{n} schemas compared, {len(diff)} differ')
  return 1 if diff else 0


def main() -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  sub = p.add_subparsers(dest='cmd', required=True)
  d = sub.add_parser('dump')
  d.add_argument('--schemas', required=True)
  d.add_argument('--sample', type=int, default=100)
  d.add_argument('--out', required=True)
  c = sub.add_parser('compare')
  c.add_argument('old')
  c.add_argument('new')
  args = p.parse_args()
  if args.cmd == 'dump':
    dump(args.schemas, args.sample, args.out)
    return 0
  return compare(args.old, args.new)


if __name__ == '__main__':
  sys.exit(main())

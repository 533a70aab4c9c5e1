"""Side-by-side JSON-schema engines: coverage, compile time, mask time, soundness.

Each engine runs in its own worker process (one per engine and subset, restarted
after a compile that overruns `--timeout`, which counts as not compiled). For every
schema the worker compiles it, then makes `walks` random walks over the engine's
own masks on the byte vocabulary (same policy for every engine: a uniformly random
allowed token, or with probability 1/4 a random allowed structural byte `"]},:` or
EOS, so walks tend to finish; at most `max_tokens` tokens). The parent checks every
finished walk: valid UTF-8, one JSON value, and valid under `jsonschema` with its
format checker (the dialect named by `$schema`, else 2020-12). A schema the
validator itself rejects or cannot evaluate is left out of the soundness count.

Figures per engine: coverage (compiled / schemas), compile ms median and p95 over
compiled schemas, host-side mask µs per token (median over schemas of the mean
per step), finished walks, invalid outputs and schemas with any invalid output,
and schemas compiled with a warning (lattice's `TokenIndex.warnings`: optional
members shed past `Options.max_object_states`).
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import random
import statistics
import time
from pathlib import Path

import numpy as np

_STRUCT = np.array([ord(c) for c in '"]},:'])
_WARMUP = {'type': 'object', 'properties': {'a': {'type': 'string', 'maxLength': 3},
                                            'b': {'type': 'integer'}}, 'required': ['a']}


def _walk(engine, g, rng, max_tokens: int):
  """(bytes written, finished?, seconds spent in masks, mask calls)."""
  from benchmarks import constrained_engines as ce  # pylint: disable=g-import-not-at-top
  state = engine.start(g)
  out, t_mask, n_mask = bytearray(), 0.0, 0
  for _ in range(max_tokens):
    t0 = time.perf_counter()
    mask = engine.allowed(g, state)
    t_mask += time.perf_counter() - t0
    n_mask += 1
    allowed = np.flatnonzero(mask)
    if not len(allowed):
      return bytes(out), False, t_mask, n_mask
    pick = allowed
    if rng.random() < 0.25:
      struct = allowed[np.isin(allowed, _STRUCT) | (allowed == ce.EOS)]
      pick = struct if len(struct) else allowed
    tok = int(rng.choice(pick))
    if tok == ce.EOS:
      return bytes(out), True, t_mask, n_mask
    out.append(tok)
    state = engine.advance(g, state, tok)
  return bytes(out), False, t_mask, n_mask


def _worker(name: str, conn, walks: int, max_tokens: int):
  from benchmarks import constrained_engines as ce  # pylint: disable=g-import-not-at-top
  engine = ce.ENGINES[name]()
  # Warm-up (lazy imports, first-call setup), so no engine's first schema pays it.
  engine.compile(_WARMUP)
  conn.send('ready')
  while True:
    msg = conn.recv()
    if msg is None:
      return
    key, schema = msg
    rec = {'ok': False}
    try:
      t0 = time.perf_counter()
      g = engine.compile(schema)
      rec.update(ok=True, compile_s=time.perf_counter() - t0,
                 warnings=list(getattr(g, 'warnings', ()) or ()))
      rng = np.random.default_rng(abs(hash(key)) % 2**32)
      outs, t_mask, n_mask = [], 0.0, 0
      for _ in range(walks):
        data, finished, tm, nm = _walk(engine, g, rng, max_tokens)
        t_mask += tm
        n_mask += nm
        if finished:
          outs.append(data)
      rec.update(outputs=outs, mask_us=t_mask / max(n_mask, 1) * 1e6)
    except Exception as e:  # pylint: disable=broad-except
      rec['error'] = f'{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ""}'
    conn.send(rec)


class _Runner:
  """One engine's worker process, restarted after a timeout."""

  def __init__(self, name: str, walks: int, max_tokens: int):
    self.args = (name, walks, max_tokens)
    self.proc = None

  def _start(self):
    ctx = mp.get_context('spawn')
    self.conn, child = ctx.Pipe()
    self.proc = ctx.Process(target=_worker, args=(self.args[0], child, *self.args[1:]),
                            daemon=True)
    self.proc.start()
    if not self.conn.poll(300):
      raise RuntimeError(f'{self.args[0]}: worker did not start')
    self.conn.recv()

  def run(self, key: str, schema: dict, timeout: float) -> dict:
    if self.proc is None or not self.proc.is_alive():
      self._start()
    self.conn.send((key, schema))
    if self.conn.poll(timeout):
      try:
        return self.conn.recv()
      except EOFError:
        pass
    self.close()
    return {'ok': False, 'error': f'timeout (> {timeout:.0f} s) or crash'}

  def close(self):
    if self.proc is not None and self.proc.pid is not None:
      self.proc.kill()
      self.proc.join()
    self.proc = None


def _validator(schema):
  import jsonschema  # pylint: disable=g-import-not-at-top
  cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
  return cls(schema, format_checker=cls.FORMAT_CHECKER)


def _check(outputs: list[bytes], schema: dict) -> tuple[int, int, int] | None:
  """(checked, invalid, non-UTF-8) or None when the validator cannot judge."""
  try:
    check = _validator(schema)
    check.is_valid(None)
  except Exception:  # pylint: disable=broad-except
    return None
  invalid = non_utf8 = 0
  for data in outputs:
    try:
      text = data.decode('utf-8')
    except UnicodeDecodeError:
      non_utf8 += 1
      invalid += 1
      continue
    try:
      ok = check.is_valid(json.loads(text))
    except ValueError:
      ok = False
    except Exception:  # pylint: disable=broad-except  # Validator crash: cannot judge.
      return None
    invalid += not ok
  return len(outputs), invalid, non_utf8


def load_schemas(path: Path, sample: int, seed: int = 0) -> dict[str, list[tuple[str, dict]]]:
  """{subset: [(name, schema)]}: each subfolder of `path` (or `path`) is a subset;
  a `.json` file is one schema, or a list of {"name", "schema"} records."""
  path = Path(path)
  if path.is_file():
    recs = json.loads(path.read_text())
    return {path.stem: [(r['name'], r['schema']) for r in recs]}
  dirs = sorted(d for d in path.iterdir() if d.is_dir()) or [path]
  out = {}
  for d in dirs:
    files = sorted(d.glob('*.json'))
    if sample and len(files) > sample:
      files = sorted(random.Random(seed).sample(files, sample))
    items = []
    for f in files:
      try:
        items.append((f.name, json.loads(f.read_text())))
      except (ValueError, UnicodeDecodeError):
        continue
    out[d.name] = items
  return out


def compare(subsets: dict, engines: list[str], walks: int, max_tokens: int,
            timeout: float, log=print) -> dict:
  """Runs every engine on every schema; returns {subset: {engine: summary}}."""
  results = {}
  for subset, items in subsets.items():
    results[subset] = {}
    for name in engines:
      runner = _Runner(name, walks, max_tokens)
      recs = []
      try:
        for key, schema in items:
          rec = runner.run(f'{subset}/{key}', schema, timeout)
          rec['schema'] = key
          if rec.get('ok'):
            verdict = _check(rec.pop('outputs'), schema)
            rec['checked'], rec['invalid'], rec['non_utf8'] = verdict or (0, 0, 0)
          recs.append(rec)
      finally:
        runner.close()
      summary = summarise(recs)
      results[subset][name] = summary
      log(f'{subset:>16} {name:>10}: ' + format_row(summary))
  return results


def summarise(recs: list[dict]) -> dict:
  ok = [r for r in recs if r.get('ok')]
  comp = sorted(r['compile_s'] for r in ok)
  masks = [r['mask_us'] for r in ok if 'mask_us' in r]
  errors: dict[str, int] = {}
  for r in recs:
    if not r.get('ok'):
      e = r.get('error', '?')[:70]
      errors[e] = errors.get(e, 0) + 1
  return {
      'schemas': len(recs), 'compiled': len(ok),
      'coverage': len(ok) / max(len(recs), 1),
      'compile_ms_median': statistics.median(comp) * 1e3 if comp else None,
      # Nearest-rank percentile: the smallest time >= 95% of the compiled schemas'.
      'compile_ms_p95': comp[math.ceil(0.95 * len(comp)) - 1] * 1e3 if comp else None,
      'mask_us_median': statistics.median(masks) if masks else None,
      'outputs_checked': sum(r.get('checked', 0) for r in ok),
      'invalid_outputs': sum(r.get('invalid', 0) for r in ok),
      'non_utf8_outputs': sum(r.get('non_utf8', 0) for r in ok),
      'schemas_with_invalid': sum(1 for r in ok if r.get('invalid')),
      # Compiled with a warning (lattice: optional members shed past a size cap).
      'schemas_with_warnings': sum(1 for r in ok if r.get('warnings')),
      'top_errors': dict(sorted(errors.items(), key=lambda kv: -kv[1])[:8]),
  }


def format_row(s: dict) -> str:
  f = lambda v, fmt: 'n/a' if v is None else format(v, fmt)
  return (f"coverage {100 * s['coverage']:5.1f}% ({s['compiled']}/{s['schemas']}), "
          f"compile median {f(s['compile_ms_median'], '.1f')} ms p95 "
          f"{f(s['compile_ms_p95'], '.1f')} ms, mask {f(s['mask_us_median'], '.1f')} µs/token, "
          f"invalid {s['invalid_outputs']}/{s['outputs_checked']} outputs "
          f"({s['schemas_with_invalid']} schemas, {s['non_utf8_outputs']} non-UTF-8), "
          f"warnings in {s.get('schemas_with_warnings', 0)} schemas")


def markdown_table(results: dict) -> str:
  """The comparison as a markdown table (one row per subset and engine)."""
  f = lambda v, fmt: 'n/a' if v is None else format(v, fmt)
  lines = ['| subset | engine | coverage | compile ms median | compile ms p95 | '
           'mask µs/token | invalid outputs | schemas with invalid | non-UTF-8 |',
           '|---|---|---|---|---|---|---|---|---|']
  for subset, engines in results.items():
    for name, s in engines.items():
      lines.append(
          f"| {subset} | {name} | {100 * s['coverage']:.1f}% ({s['compiled']}/{s['schemas']})"
          f" | {f(s['compile_ms_median'], '.2f')} | {f(s['compile_ms_p95'], '.1f')} | "
          f"{f(s['mask_us_median'], '.1f')} | {s['invalid_outputs']}/{s['outputs_checked']}"
          f" | {s['schemas_with_invalid']} | {s['non_utf8_outputs']} |")
  return '\n'.join(lines)

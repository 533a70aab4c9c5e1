r"""Behaviour-preservation check: every experiment's smoke result against a reference.

  python scripts/smoke_parity.py --record   # writes scripts/smoke_parity_reference.json
  python scripts/smoke_parity.py --record --only quest  # re-records named experiments
  python scripts/smoke_parity.py            # reruns and lists every difference
  python scripts/smoke_parity.py --save now.json   # ... and keeps this run's numbers
  python scripts/smoke_parity.py --compare now.json  # compares saved numbers only

The reference is a baseline of the code as it is, not of some historical tree:
record it at a commit whose behaviour you trust, then every later refactor is
checked against it; an intended change of behaviour (a redesigned experiment)
re-records the experiments it changes (`--record --only NAME`). Each experiment's
entry remembers the commit it was recorded at (`_meta`, "+dirty" when the tree had
uncommitted changes), and a check prints it, so a difference reads as "since
commit X".

Each experiment's `smoke` mode (its fixed seeds) runs in its own process into a
temporary workdir; the key numbers of its result.json are kept: per arm every
metric's per-seed values, params, active params, tokens, train FLOPs; every
check's name and outcome. Timings are recorded but not compared: metrics whose
names say they are times, rates or utilisation (wall, mfu, goodput, tokens_per_s, *_s,
latency, speedup, time), nor checks whose names say they test one (e.g. "MTP
speculative speedup survives ternary weights", decided by wall-clock ratios on a
loaded machine). Floats compare at relative tolerance RTOL (1e-5) with
an absolute floor ATOL (1e-7); counts and check outcomes compare exactly.
Metrics that exist only now (a run now reports every scalar metric that appears)
are listed separately as additions, not as differences. Exit status 0 when
nothing differs, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import re
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
REFERENCE = ROOT / 'scripts' / 'smoke_parity_reference.json'
RTOL, ATOL = 1e-5, 1e-7
# Measured times and rates vary run to run; they are recorded, never compared.
TIMING = re.compile(r'wall|mfu|goodput|per_s|_s$|tokens/s|latency|speedup|faster|time|'
                    r'throughput', re.I)


META = '_meta'  # {experiment: commit it was recorded at}


def git_commit() -> str:
  """HEAD's short hash, "+dirty" when tracked files have uncommitted changes."""
  def git(*args):
    return subprocess.run(['git', *args], cwd=ROOT, capture_output=True, text=True,
                          check=False).stdout.strip()
  head = git('rev-parse', '--short', 'HEAD') or 'unknown'
  return head + ('+dirty' if git('status', '--porcelain', '--untracked-files=no') else '')


def experiments() -> list[str]:
  return sorted(p.stem for p in (ROOT / 'experiments').glob('*.py')
                if p.name != '__init__.py')


def key_numbers(result: dict) -> dict:
  """The compared part of one result.json."""
  arms = {}
  for arm in result['arms']:
    arms[arm['name']] = {
        'params': arm.get('params'), 'active_params': arm.get('active_params'),
        'tokens': arm.get('tokens'), 'train_flops': arm.get('train_flops'),
        'seeds': arm.get('seeds'),
        'metrics': {k: v.get('values', [v.get('mean')])
                    for k, v in sorted(arm.get('metrics', {}).items())}}
  return {'arms': arms,
          'checks': {c['name']: c['passed'] for c in result['checks']}}


def run_one(name: str) -> dict:
  """Runs experiments/<name>.py:smoke in this process; its key numbers."""
  sys.path.insert(0, str(ROOT))
  from lattice import experiment  # pylint: disable=g-import-not-at-top
  module = experiment.load_experiment_module(str(ROOT / 'experiments' / f'{name}.py'))
  with tempfile.TemporaryDirectory(prefix=f'parity-{name}-') as workdir:
    module.run(module.get_config('smoke'), workdir)
    return key_numbers(json.loads((pathlib.Path(workdir) / 'result.json').read_text()))


def run_all(names: list[str]) -> dict:
  out = {}
  for name in names:
    print(f'[parity] {name} ...', file=sys.stderr, flush=True)
    proc = subprocess.run(
        [sys.executable, __file__, '--one', name], cwd=ROOT, capture_output=True,
        text=True, env={**os.environ, 'PYTHONPATH': str(ROOT)})
    if proc.returncode != 0:
      out[name] = {'error': proc.stderr.strip().splitlines()[-1:] or ['?']}
      print(proc.stderr[-3000:], file=sys.stderr)
    else:
      out[name] = json.loads(proc.stdout.strip().splitlines()[-1])
  return out


def _close(a, b) -> bool:
  if isinstance(a, bool) or isinstance(b, bool) or isinstance(a, int) and isinstance(b, int):
    return a == b
  if isinstance(a, (int, float)) and isinstance(b, (int, float)):
    if math.isnan(a) or math.isnan(b):
      return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= ATOL + RTOL * abs(b)
  return a == b


def differences(ref, new, path: str = '') -> list[str]:
  """Every difference beyond tolerance between two key-number trees."""
  if isinstance(ref, dict) and isinstance(new, dict):
    out = []
    for k in sorted(set(ref) | set(new), key=str):
      where = f'{path}.{k}' if path else str(k)
      if k not in new:
        out.append(f'{where}: missing now (was {ref[k]!r})')
      elif k not in ref:
        out.append(f'ADDED {where}: (now {new[k]!r})')
      elif ('.metrics.' in f'{where}.' or '.checks.' in f'{where}.') and TIMING.search(
          str(k)):
        continue  # a measured time or rate, or a check on one
      else:
        out.extend(differences(ref[k], new[k], where))
    return out
  if isinstance(ref, list) and isinstance(new, list):
    if len(ref) != len(new):
      return [f'{path}: {len(ref)} values then, {len(new)} now']
    return [d for i, (a, b) in enumerate(zip(ref, new))
            for d in differences(a, b, f'{path}[{i}]')]
  if not _close(new, ref):
    return [f'{path}: {ref!r} -> {new!r}']
  return []


def record(now: dict, only: list[str] | None) -> dict:
  """The reference to write: `now` stamped with this commit; with `only`, merged into
  the existing reference (the other experiments keep their numbers and commits)."""
  old = json.loads(REFERENCE.read_text()) if only and REFERENCE.exists() else {}
  commit = git_commit()
  meta = {**old.get(META, {}), **{name: commit for name in now}}
  return {**old, **now, META: meta}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--record', action='store_true', help='write the reference')
  parser.add_argument('--one', help=argparse.SUPPRESS)
  parser.add_argument('--only', nargs='*', help='these experiments only')
  parser.add_argument('--save', help='also write this run\'s numbers to this file')
  parser.add_argument('--compare', help='compare numbers saved with --save; no run')
  args = parser.parse_args()
  if args.one:
    print(json.dumps(run_one(args.one)))
    return
  names = args.only or experiments()
  if args.compare:
    now = json.loads(pathlib.Path(args.compare).read_text())
    names = [n for n in names if n in now]
  else:
    now = run_all(names)
  if args.save:
    pathlib.Path(args.save).write_text(json.dumps(now, indent=1, sort_keys=True) + '\n')
  if args.record:
    ref = record(now, args.only)
    REFERENCE.write_text(json.dumps(ref, indent=1, sort_keys=True) + '\n')
    commits = sorted({ref[META][name] for name in now})
    print(f'[parity] wrote {REFERENCE} ({len(now)} experiments at {", ".join(commits)})')
    return
  ref = json.loads(REFERENCE.read_text())
  recorded = ref.get(META, {})
  for n in names:
    print(f'[parity] {n}: reference recorded at {recorded.get(n, "an unrecorded commit")}')
  found = differences({n: ref.get(n) for n in names}, {n: now.get(n) for n in names})
  added = [d for d in found if d.startswith('ADDED ')]
  diffs = [d for d in found if not d.startswith('ADDED ')]
  for d in diffs + added:
    print(d)
  print(f'[parity] {len(names)} experiments, {len(diffs)} differences beyond '
        f'rtol={RTOL} (atol={ATOL}); counts and checks exact; timings not compared; '
        f'{len(added)} metrics added')
  sys.exit(1 if diffs else 0)


if __name__ == '__main__':
  main()

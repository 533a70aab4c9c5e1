"""Seeds each pre-registered check needs, and each quick mode's arm time, from results/.

  python scripts/seed_power.py [--results results]

Reads every results/<experiment>/result.json (nothing trains) and prints, per
experiment, the commit and load the result came from, each arm's seeds and wall time
per seed (`wall_s` / seeds), and for every check judged on a paired t interval (its
detail lists the per-seed values "s0 ..., s1 ...") the pilot mean and sd of the
per-seed differences and the seeds needed for that mean to clear the check's bound.

Seeds needed, two columns, both taking the pilot's mean and sd as the truth and the
gap = |mean - bound| on the check's passing side (bound 0 for "better", the margin
for "not worse"; the one-sample t interval of lattice.run.stats.mean_ci):
  n50: the smallest n >= 3 with gap > t_{n-1, 0.975} sd / sqrt(n): the expected
       interval just clears the bound, so the check passes about half the time;
  n80: the smallest n >= 3 with gap > (t_{n-1, 0.975} + t_{n-1, 0.80}) sd / sqrt(n),
       the usual sample-size rule for 80% power of a one-sample t test (e.g.
       Chow, Shao & Wang, "Sample Size Calculations in Clinical Research", 2008,
       sec. 3.1, with t quantiles in place of normal ones).
Both are optimistic (the pilot's mean is itself noisy). "never" means the pilot
mean is on the failing side of the bound: no seed count makes this design pass.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lattice.run import stats  # pylint: disable=wrong-import-position

MAX_SEEDS = stats.MAX_SEEDS
seeds_needed = stats.seeds_needed
_SEEDS = re.compile(r'over \d+ seeds \(([^)]*)\)')
_VALUE = re.compile(r's\d+ ([+-]?[0-9.]+(?:e[+-]?\d+)?)(%?)')
_BOUND = re.compile(r'needs the CI (below|above) ([+-]?[0-9.]+)(%?)'
                    r'|needs the CI (upper|lower) bound [<>] ([+-]?[0-9.]+)(%?)')


def parse_check(detail: str) -> dict | None:
  """Per-seed values and the bound of a paired-t check's detail line, or None."""
  m, b = _SEEDS.search(detail), _BOUND.search(detail)
  if not m or not b:
    return None
  values = [float(v) / (100 if pct else 1) for v, pct in _VALUE.findall(m.group(1))]
  if b.group(1):
    below, bound, pct = b.group(1) == 'below', float(b.group(2)), b.group(3)
  else:
    below, bound, pct = b.group(4) == 'upper', float(b.group(5)), b.group(6)
  return {'values': values, 'bound': bound / (100 if pct else 1), 'below': below}


def summarize(path: pathlib.Path) -> dict:
  r = json.loads(path.read_text())
  env = r['env']
  arms = [{'name': a['name'], 'seeds': len(a.get('seeds') or [0]),
           'wall_s': float(a.get('wall_s') or 0.0)} for a in r['arms']]
  checks = []
  for c in r['checks']:
    p = parse_check(c['detail'])
    if p is None:
      checks.append({'name': c['name'], 'passed': c['passed'], 'paired': False})
      continue
    mean, var, n = stats.mean_var(p['values'])
    sd = math.sqrt(var) if n > 1 else float('nan')
    checks.append({'name': c['name'], 'passed': c['passed'], 'paired': True, 'n': n,
                   'mean': mean, 'sd': sd, 'bound': p['bound'], 'below': p['below'],
                   'n50': seeds_needed(mean, sd, p['bound'], p['below']),
                   'n80': seeds_needed(mean, sd, p['bound'], p['below'], 0.8)})
  return {'experiment': r['experiment'], 'mode': r['mode'],
          'commit': env.get('git_commit'), 'timestamp': env.get('timestamp'),
          'load_start': env.get('load_average_start'),
          'load_end': env.get('load_average_end'),
          'arm_s': sum(a['wall_s'] for a in arms), 'arms': arms, 'checks': checks}


def _n(n: int) -> str:
  return f'> {MAX_SEEDS}' if n > MAX_SEEDS else str(n)


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument('--results', default=str(ROOT / 'results'))
  args = ap.parse_args(argv)
  for path in sorted(pathlib.Path(args.results).glob('*/result.json')):
    s = summarize(path)
    load = (f'load {s["load_start"][0]:.2f} -> {s["load_end"][0]:.2f}'
            if s['load_start'] else 'load not recorded')
    print(f'## {s["experiment"]} ({s["mode"]}, {s["commit"]}, {s["timestamp"]}, {load}): '
          f'summed arm time {s["arm_s"]:.0f} s')
    for a in s['arms']:
      print(f'   arm {a["name"]}: {a["seeds"]} seed(s), {a["wall_s"]:.0f} s '
            f'({a["wall_s"] / a["seeds"]:.1f} s a seed)')
    for c in s['checks']:
      if not c['paired']:
        print(f'   check {"PASS" if c["passed"] else "FAIL"} {c["name"]}: not a paired t check')
        continue
      need = ('never (pilot mean on the failing side)' if c['n50'] is None else
              f'n50 {_n(c["n50"])}, n80 {_n(c["n80"])}')
      side = '<' if c['below'] else '>'
      print(f'   check {"PASS" if c["passed"] else "FAIL"} {c["name"]}: {c["n"]} seeds, '
            f'mean {c["mean"]:+.4g}, sd {c["sd"]:.3g}, bound {side} {c["bound"]:+g}; '
            f'seeds needed {need}')
  return 0


if __name__ == '__main__':
  raise SystemExit(main())

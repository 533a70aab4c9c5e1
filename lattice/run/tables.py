"""Markdown: a Result's table.md, the sweep's ablation and effects tables, and the
number formats they share.

Results and arms are read by attribute (`lattice.run.records.Result`/`Arm`), so
this module imports no record type.
"""

from __future__ import annotations

import json
import math
from typing import Any, Sequence

from lattice.run import equal_flops, provenance


def arxiv_url(arxiv: str) -> str:
  """'2402.17764' or 'arXiv:2402.17764' -> https://arxiv.org/abs/2402.17764."""
  arxiv = arxiv.strip()
  if arxiv.startswith(('http://', 'https://')):
    return arxiv
  if arxiv.lower().startswith('arxiv:'):
    arxiv = arxiv[len('arxiv:'):]
  return f'https://arxiv.org/abs/{arxiv}'


def paper_link(paper: dict[str, str]) -> str:
  title = cell(paper.get('title') or '(untitled)')
  return f'[{title}]({arxiv_url(paper["arxiv"])})' if paper.get('arxiv') else title


def cell(text: Any) -> str:
  """Makes text safe inside a markdown table cell."""
  return ' '.join(str(text).split()).replace('|', r'\|')


def fmt_number(x: float, digits: int = 4) -> str:
  """`digits` significant digits; scientific notation only for very large/small."""
  if isinstance(x, float) and math.isnan(x):
    return 'nan'
  if isinstance(x, float) and math.isinf(x):
    return 'inf' if x > 0 else '-inf'
  if isinstance(x, int) and not isinstance(x, bool):
    return str(x)
  if x != 0 and (abs(x) >= 1e6 or abs(x) < 1e-3):
    return fmt_sci(x, min(digits, 3))
  return f'{x:.{digits}g}'


def fmt_sci(x: float, digits: int = 2) -> str:
  """1.2e12 rather than 1.2e+12."""
  if x == 0:
    return '0'
  mantissa, exp = f'{x:.{digits - 1}e}'.split('e')
  return f'{mantissa}e{int(exp)}'


def fmt_count(n: float) -> str:
  """Parameter and token counts: 950, 12.3K, 1.24M, 7.0B."""
  for scale, suffix in ((1e12, 'T'), (1e9, 'B'), (1e6, 'M'), (1e3, 'K')):
    if abs(n) >= scale:
      return f'{n / scale:.3g}{suffix}'
  return str(int(n))


def fmt_mean_std(m: dict[str, Any] | None) -> str:
  """'2.415 ± 0.034' from an aggregate() entry; '—' for none or a NaN mean, the mean
  alone for one seed, '± 0' when the seeds agree up to float rounding."""
  if not m or m.get('mean') is None or math.isnan(m['mean']):
    return '—'
  std = m.get('std', 0.0)
  if m.get('n', len(m.get('values', [])) or 1) < 2 or math.isnan(std):
    return fmt_number(m['mean'])
  if std <= 1e-9 * abs(m['mean']):
    return f'{fmt_number(m["mean"])} ± 0'
  # Two digits of a std are all a few seeds can estimate.
  return f'{fmt_number(m["mean"])} ± {fmt_number(std, 2)}'


def equal_flops_line(arms: list, key: str = 'val_loss') -> str:
  """'At equal training FLOPs ...' when arms trained for different FLOPs and have
  eval histories: each arm's `key` at the FLOPs the cheapest arm reached. Arms named
  'group:name' are compared only within their group (e.g. other data); a group
  where fewer than two arms were evaluated that early gets no line."""
  groups: dict[str, list] = {}
  for a in arms:
    if a.train_flops > 0 and any(key in h for run in a.extra.get('history', [])
                                 for h in run):
      groups.setdefault(a.name.split(':', 1)[0] if ':' in a.name else '', []).append(a)
  lines = []
  for group, members in groups.items():
    flops = [a.train_flops for a in members]
    if len(members) < 2 or max(flops) <= 1.02 * min(flops):
      continue
    target, values = equal_flops.equal_flops(members, key)
    if sum(not math.isnan(v['mean']) for v in values.values()) < 2:
      continue
    cells = ', '.join(f'**{cell(a.name)}** {fmt_mean_std(values[a.name])}'
                      for a in members)
    lines.append(f'At equal training FLOPs{f" ({group})" if group else ""} '
                 f'({fmt_sci(target)}, what the cheapest arm trained; interpolated '
                 f'between eval points, — before an arm\'s first eval): {key} {cells}')
  return '\n\n'.join(lines)


# Above the checks when any was judged by lattice.run.checks (pre-registered, paired).
PAIRED_NOTE = ('Pre-registered paired checks (lattice.run.checks): per seed, the '
               'difference of the two arms (same init seed and data order); the '
               'interval is the Student t 95% CI of its mean over seeds. "Better" '
               'needs the whole CI on the good side of 0; "not worse" needs it within '
               'the stated margin; fewer than 3 seeds fail.')


def verdict(result) -> str:
  if result.reproduced:
    return 'reproduced'
  passed = sum(c.passed for c in result.checks)
  return f'not reproduced ({passed}/{len(result.checks)} checks)'


def arms_table(arms: list) -> str:
  """Arms (rows) x metrics (mean ± std) and cost columns."""
  names: list[str] = []
  for arm in arms:
    names += [k for k in arm.metrics if k not in names]
  header = (['arm'] + names +
            ['seeds', 'params', 'active params', 'train FLOPs', 'tokens', 'wall s'])
  rows = ['| ' + ' | '.join(cell(h) for h in header) + ' |',
          '|' + '---|' * len(header)]
  for arm in arms:
    row = [f'**{cell(arm.name)}**']
    for name in names:
      m = arm.metrics.get(name)
      row.append(fmt_mean_std(m))
    n = max((m.get('n', 0) for m in arm.metrics.values()), default=0)
    row += [str(len(arm.seeds) or n), fmt_count(arm.params),
            fmt_count(arm.active_params), fmt_sci(arm.train_flops),
            fmt_count(arm.tokens), f'{arm.wall_s:.1f}']
    rows.append('| ' + ' | '.join(row) + ' |')
  return '\n'.join(rows)


def result_markdown(result, *, level: int = 1, plot_prefix: str = '') -> str:
  """The table.md text; `level` and `plot_prefix` let the report embed it."""
  h = '#' * level
  env = result.env
  lines = [
      f'{h} {result.experiment}', '',
      f'- **Paper:** {paper_link(result.paper)}',
      f'- **Claim:** {cell(result.claim)}',
      f'- **Mode:** {result.mode}',
      f'- **Verdict:** {"✓" if result.reproduced else "✗"} {verdict(result)}',
  ]
  if result.headline:
    lines.append(f'- **Paper\'s number:** {cell(result.headline.get("paper", "—"))}'
                 f'; **ours:** {cell(result.headline.get("ours", "—"))}')
  moved = env.get('git_commit_end')
  lines.append(f'- **Env:** jax {env.get("jax")}, {env.get("backend")} '
               f'({env.get("device_count")} × {env.get("device_kind")}), '
               f'commit {env.get("git_commit") or "unknown"}'
               f'{f" (the tree was at {moved} when the result was written)" if moved else ""}, '
               f'{env.get("timestamp", "")}')
  warning = provenance.busy(env)
  if warning:
    lines.append(f'- **⚠ Load:** {warning}')
  elif env.get('load_average_end'):
    start = env.get('load_average_start')
    lines.append(f'- **Load:** 1-minute load average '
                 f'{f"{start[0]:.2f} at the start, " if start else ""}'
                 f'{env["load_average_end"][0]:.2f} at the end '
                 f'({env.get("cpu_count")} cores)')
  lines += ['', f'{h}# Arms', '', arms_table(result.arms), '']
  line = equal_flops_line(result.arms)
  if line:
    lines += [line, '']
  overridden = [a for a in result.arms if a.overrides]
  if overridden:
    lines += ['Overrides (vs the experiment\'s base config):', '']
    for arm in overridden:
      kv = ', '.join(f'`{k}={v!r}`' for k, v in arm.overrides.items())
      lines.append(f'- **{cell(arm.name)}**: {kv}')
    lines.append('')
  lines += [f'{h}# Checks', '']
  if any('paired t over' in c.detail for c in result.checks):
    lines += [PAIRED_NOTE, '']
  lines += [f'- {"✓" if c.passed else "✗"} **{cell(c.name)}**: {cell(c.detail)}'
            for c in result.checks] or ['- (no checks: the claim was not tested)']
  if getattr(result, 'evals', None):
    lines += ['', f'{h}# Evaluation (`lattice eval`)', '', evals_table(result.evals)]
  if result.plots:
    lines += ['', f'{h}# Plots', '']
    for p in result.plots:  # One per paragraph, so viewers stack them.
      lines += [f'![{p}]({plot_prefix}{p})', '']
    lines.pop()
  if result.notes:
    lines += ['', f'{h}# Notes', '', result.notes.strip()]
  return '\n'.join(lines) + '\n'


# ---------------------------------------------------------------------------
# Sweeps (lattice.run.sweep)


def _ci(d: dict[str, float]) -> str:
  diff = f'{d["diff"]:+.4g}'
  if math.isnan(d['lo']):
    return f'{diff} (1 seed: no CI)'
  star = ' *' if d['lo'] > 0 or d['hi'] < 0 else ''
  return f'{diff} [{d["lo"]:+.3g}, {d["hi"]:+.3g}]{star}'


def ablation_table(arms: list, grids: Sequence[tuple[str, list[Any]]],
                   analysis: dict[str, Any], extra_metrics: Sequence[str] = ()) -> str:
  """The markdown ablation table: one row per arm."""
  metric = analysis['metric']
  pct = int(round(analysis['level'] * 100))
  flops_at = analysis['equal_flops']['flops']
  keys = [k for k, _ in grids]
  header = ([k.split('.', 1)[-1] for k in keys] +
            [metric, f'Δ vs {analysis["baseline"]} [{pct}% CI]',
             f'{metric} @ {fmt_sci(flops_at)} FLOPs'] + list(extra_metrics) +
            ['active params', 'train FLOPs', 'tokens', 'seeds', 'wall s'])
  rows = ['| arm | ' + ' | '.join(cell(h) for h in header) + ' |',
          '|' + '---|' * (len(header) + 1)]
  for a in arms:
    d = analysis['diffs'].get(a.name)
    row = [f'**{cell(a.name)}**'] + [cell(a.overrides.get(k, '—'))
                                            for k in keys]
    row += [fmt_mean_std(a.metrics.get(metric)),
            '(baseline)' if a.name == analysis['baseline'] else (_ci(d) if d else '—'),
            fmt_mean_std(analysis['equal_flops']['values'].get(a.name))]
    row += [fmt_mean_std(a.metrics.get(m)) for m in extra_metrics]
    row += [fmt_count(a.active_params), fmt_sci(a.train_flops),
            fmt_count(a.tokens), str(len(a.seeds)), f'{a.wall_s:.0f}']
    rows.append('| ' + ' | '.join(row) + ' |')
  return '\n'.join(rows)


def effects_table(analysis: dict[str, Any]) -> str:
  if not analysis['effects']:
    return ''
  pct = int(round(analysis['level'] * 100))
  rows = [f'| effect on {analysis["metric"]} | kind | estimate | {pct}% CI | seeds |',
          '|---|---|---|---|---|']
  for e in analysis['effects']:
    ci = ('—' if math.isnan(e['lo']) else
          f'[{e["lo"]:+.3g}, {e["hi"]:+.3g}]' + (' *' if e['lo'] > 0 or e['hi'] < 0
                                                 else ''))
    rows.append(f'| {cell(e["effect"])} | {e["kind"]} | {e["mean"]:+.4g} | '
                f'{ci} | {e["n"]} |')
  return '\n'.join(rows)


def sweep_markdown(title: str, arms: list,
                grids: Sequence[tuple[str, list[Any]]], analysis: dict[str, Any],
                extra_metrics: Sequence[str] = (), plot: str | None = None) -> str:
  pct = int(round(analysis['level'] * 100))
  lines = [f'# {title}', '',
           f'Mean ± std over seeds. Δ: arm minus baseline, t {pct}% interval over '
           'the per-seed differences over the seeds both ran (Welch\'s interval '
           'where they share fewer than two); '
           '* marks an interval that excludes 0. The equal-FLOPs column reads every '
           'arm at the FLOPs the cheapest one reached (interpolated between eval '
           'points; — when outside them).', '',
           ablation_table(arms, grids, analysis, extra_metrics), '']
  effects = effects_table(analysis)
  if effects:
    lines += ['## Main effects and interactions', '',
              'Per seed, each seed a replicate of the whole factorial; estimate = '
              f'mean over seeds, t {pct}% interval over seeds.', '', effects, '']
  if plot:
    lines += [f'![{plot}]({plot})', '']
  return '\n'.join(lines)


def evals_table(evals) -> str:
  """Markdown table of `lattice eval` / `lattice lm-eval --record` rows
  (records.add_evals): run, step, eval set (or lm_eval tasks),
  val_loss (nats/token), val_ppl, val_bpb (bits/byte), and any other numbers."""
  def where(e) -> str:
    ev = e.get('eval') or {}
    if 'lm_eval' in ev:   # `lattice lm-eval --record` rows: the tasks
      return 'lm_eval ' + ','.join(f'`{t}`' for t in ev['lm_eval'])
    paths = ev.get('paths') or ''
    paths = ','.join(paths) if isinstance(paths, list) else str(paths)
    parts = [ev.get('source', '?'), paths, ev.get('split', ''), ev.get('tokenizer', '')]
    return ' '.join(f'`{p}`' for p in parts if p)
  def num(x, digits: int) -> str:
    return f'{x:.{digits}f}' if isinstance(x, (int, float)) else '—'
  fixed = {'run', 'step', 'eval', 'eval_batches', 'val_loss', 'val_ppl', 'val_bpb'}
  lines = ['| run | step | eval set | val_loss | val_ppl | val_bpb | other |',
           '|---|---|---|---|---|---|---|']
  for e in evals:
    other = ', '.join(f'{k}={json.dumps(v, sort_keys=True)}' for k, v in e.items()
                      if k not in fixed)
    lines.append(f'| {cell(e.get("run", "?"))} | {e.get("step", "?")} | {cell(where(e))} '
                 f'| {num(e.get("val_loss"), 4)} | {num(e.get("val_ppl"), 3)} '
                 f'| {num(e.get("val_bpb"), 4)} | {cell(other) or "—"} |')
  return '\n'.join(lines)

"""Small, labelled PNG plots for experiment results.

  plot_series    named (x, y) lines, optional horizontal reference lines
  plot_training  a run's training-loss and validation curves from metrics.jsonl,
                 x in tokens (or training FLOPs) so arms of different size compare
  plot_bars      one value per arm with error bars, y fitted to the bars
  plot_ablation  a sweep's metric per arm, error bars = the table's Δ interval

Each `plot_*` saves a PNG and returns its file name; the matching `*_figure`
returns the matplotlib Figure instead, so tests read the plotted data back.
matplotlib is imported inside each function so `import lattice.results` stays
fast, and figures are drawn on an Agg canvas through the object API (no pyplot):
no global figure state, no GUI backend, nothing ever shown.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
from typing import Any, Sequence

from lattice import storage
from lattice.run.records import is_primary_process

_FIGSIZE = (5.5, 3.6)
_DPI = 130


def _new_figure():
  # pylint: disable-next=g-import-not-at-top
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  fig = Figure(figsize=_FIGSIZE, dpi=_DPI)
  FigureCanvasAgg(fig)
  return fig


def _save(fig, path: str | os.PathLike[str]) -> str:
  path = storage.path(path)  # local or gs://
  if path.suffix.lower() != '.png':
    raise ValueError(f'plot path must end in .png, got {path}')
  if not is_primary_process():
    return path.name
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.tight_layout()
  with path.open('wb') as f:
    fig.savefig(f, format='png')
  return path.name


Series = dict[str, tuple[Sequence[float], Sequence[float]]]
# Fraction of the y span added above and below fitted limits.
_PAD = 0.08


def _padded(lo: float, hi: float) -> tuple[float, float]:
  span = hi - lo if hi > lo else max(abs(hi), 1.0) * 1e-3
  return lo - _PAD * span, hi + _PAD * span


def series_figure(series: Series, *, xlabel: str, ylabel: str, title: str,
                  logx: bool = False, logy: bool = False,
                  references: dict[str, float] | None = None,
                  ylim: tuple[float, float] | None = None):
  """The Figure of `plot_series` (one Axes). `references` are labelled dashed
  horizontal lines (e.g. a claim's bound); `ylim` overrides matplotlib's fit."""
  if not series:
    raise ValueError('plot_series: no series to plot')
  import numpy as np  # pylint: disable=g-import-not-at-top
  fig = _new_figure()
  ax = fig.add_subplot()
  for name, (xs, ys) in series.items():
    xs, ys = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    if xs.shape != ys.shape or xs.ndim != 1:
      raise ValueError(f'plot_series: series {name!r} needs 1-D xs and ys '
                       f'of equal length, got shapes {xs.shape} and {ys.shape}')
    # Markers keep short series (a few sizes in a scaling sweep) readable.
    ax.plot(xs, ys, label=name, marker='o' if len(xs) <= 20 else None,
            markersize=3, linewidth=1.5)
  for k, (name, y) in enumerate((references or {}).items()):
    ax.axhline(float(y), color='0.35', linestyle=('--', ':', '-.')[k % 3],
               linewidth=1.0, label=name)
  # pylint: disable-next=g-import-not-at-top
  from matplotlib.ticker import LogFormatter
  if logx:
    ax.set_xscale('log')
  if logy:
    ax.set_yscale('log')
  for axis, log in ((ax.xaxis, logx), (ax.yaxis, logy)):
    if log:
      # Plain '2.5' rather than '2.5×10^0' on the short ranges losses span.
      axis.set_major_formatter(LogFormatter(labelOnlyBase=False))
      axis.set_minor_formatter(LogFormatter(labelOnlyBase=False,
                                            minor_thresholds=(2, 0.5)))
  if ylim is not None:
    ax.set_ylim(*ylim)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  ax.grid(True, alpha=0.3)
  ax.legend(fontsize='small')
  return fig


def plot_series(path: str | os.PathLike[str], series: Series, *, xlabel: str,
                ylabel: str, title: str, logx: bool = False, logy: bool = False,
                references: dict[str, float] | None = None) -> str:
  """Line plot of named (xs, ys) series, e.g. loss curves; returns the file name."""
  try:
    fig = series_figure(series, xlabel=xlabel, ylabel=ylabel, title=title, logx=logx,
                        logy=logy, references=references)
  except ValueError as e:
    raise ValueError(f'{str(e).replace("plot_series", f"plot_series({path})", 1)}'
                     ) from None
  return _save(fig, path)


_X_LABELS = {'tokens': 'training tokens', 'flops': 'training FLOPs', 'step': 'step'}


def training_curves(runs: dict[str, str | os.PathLike[str]], *, x: str = 'tokens',
                    train_key: str = 'loss', val_key: str = 'val_loss') -> Series:
  """'<run> train' and '<run> val' (x, y) curves from each run's metrics.jsonl.

  `runs` maps a label to a run folder (holding metrics.jsonl and config.json; for
  x='flops' also final_metrics.json). x is 'step', 'tokens' (step x batch_size x
  seq_len of the run's config) or 'flops' (tokens x the run's train FLOPs per
  token). Raises ValueError naming a missing file or an unknown `x`.
  """
  if x not in _X_LABELS:
    raise ValueError(f'training_curves: x must be one of {", ".join(_X_LABELS)}, got {x!r}')
  out: Series = {}
  for label, run in runs.items():
    run = storage.path(run)  # local or gs://
    need = ['metrics.jsonl'] + (['config.json'] if x != 'step' else []) + (
        ['final_metrics.json'] if x == 'flops' else [])
    missing = [n for n in need if not (run / n).is_file()]
    if missing:
      raise ValueError(f'training_curves: {run} has no {", ".join(missing)}')
    scale = 1.0
    if x != 'step':
      data = json.loads((run / 'config.json').read_text())['data']
      scale = float(data['batch_size'] * data['seq_len'])
    if x == 'flops':
      scale *= float(json.loads((run / 'final_metrics.json').read_text())['flops_per_token'])
    rows = [json.loads(l) for l in (run / 'metrics.jsonl').read_text().splitlines() if l]
    for kind, key in (('train', train_key), ('val', val_key)):
      pts = [(r['step'] * scale, float(r[key])) for r in rows if key in r]
      if pts:
        out[f'{label} {kind}'] = ([p[0] for p in pts], [p[1] for p in pts])
  if not out:
    raise ValueError(f'training_curves: no {train_key!r} or {val_key!r} rows in '
                     f'{", ".join(str(r) for r in runs.values())}')
  return out


def fitted_ylim(series: Series, references: dict[str, float] | None = None,
                skip_first: float = 0.1) -> tuple[float, float]:
  """y limits around every point and reference, leaving out each train curve's
  first `skip_first` of its x range (the initial drop from ln V would flatten the
  part worth reading); validation curves and references are always inside."""
  ys = list((references or {}).values())
  for name, (xs, vals) in series.items():
    if name.endswith(' train') and len(xs) > 1:
      cut = xs[0] + skip_first * (xs[-1] - xs[0])
      vals = [v for u, v in zip(xs, vals) if u >= cut] or list(vals)
    ys += [v for v in vals if math.isfinite(v)]
  return _padded(min(ys), max(ys))


def training_figure(runs: dict[str, str | os.PathLike[str]], *, x: str = 'tokens',
                    train_key: str = 'loss', val_key: str = 'val_loss',
                    ylabel: str = 'loss (nats/token)', title: str = 'training',
                    references: dict[str, float] | None = None):
  """The Figure of `plot_training`."""
  series = training_curves(runs, x=x, train_key=train_key, val_key=val_key)
  return series_figure(series, xlabel=_X_LABELS[x], ylabel=ylabel, title=title,
                       references=references, ylim=fitted_ylim(series, references))


def plot_training(path: str | os.PathLike[str], runs: dict[str, str | os.PathLike[str]],
                  **kwargs) -> str:
  """Training-loss and validation curves of `runs` ({label: run folder}) against
  tokens (or `x='flops'`/`'step'`), with `references` as dashed lines and y fitted
  to the curves (see `training_figure`, `training_curves`); returns the file name."""
  return _save(training_figure(runs, **kwargs), path)


def bars_figure(values: dict[str, float], errors: dict[str, float] | None, *,
                ylabel: str, title: str):
  """The Figure of `plot_bars`.

  The y axis starts at 0 unless the bars' spread (error bars included) is under
  half their distance from 0, when a 0-based axis would hide the differences; it
  is then fitted to the bars' tops and error bars.
  """
  if not values:
    raise ValueError('plot_bars: no values to plot')
  if errors is not None and set(errors) - set(values):
    raise ValueError(f'plot_bars: errors for unknown bars '
                     f'{sorted(set(errors) - set(values))}')
  names = list(values)
  heights = [float(values[n]) for n in names]
  yerr = [0.0] * len(names) if errors is None else [float(errors.get(n, 0.0))
                                                    for n in names]
  fig = _new_figure()
  ax = fig.add_subplot()
  ax.bar(range(len(names)), heights, yerr=None if errors is None else yerr, capsize=4,
         color='tab:blue', alpha=0.85)
  lo = min(h - e for h, e in zip(heights, yerr))
  hi = max(h + e for h, e in zip(heights, yerr))
  if lo > 0 and hi - lo < 0.5 * lo:
    ax.set_ylim(*_padded(lo, hi))
  elif hi < 0 and hi - lo < 0.5 * -hi:
    ax.set_ylim(*_padded(lo, hi))
  # The value under each name: a fitted axis can cut a bar's middle off.
  long_names = len(names) > 4 or max(len(n) for n in names) > 10
  ax.set_xticks(range(len(names)), [f'{n}\n{h:.4g}' for n, h in zip(names, heights)],
                rotation=30 if long_names else 0,
                ha='right' if long_names else 'center', fontsize='small')
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  ax.grid(True, axis='y', alpha=0.3)
  return fig


def plot_bars(path: str | os.PathLike[str], values: dict[str, float],
              errors: dict[str, float] | None, *, ylabel: str, title: str) -> str:
  """Bar chart of one value per arm, with optional error bars (e.g. std over seeds);
  y fitted as `bars_figure` says. Returns the file name."""
  try:
    fig = bars_figure(values, errors, ylabel=ylabel, title=title)
  except ValueError as e:
    raise ValueError(f'{str(e).replace("plot_bars", f"plot_bars({path})", 1)}') from None
  return _save(fig, path)


def ablation_errors(arms: list, analysis: dict[str, Any]) -> dict[str, float]:
  """Per arm, half the width of its Δ-vs-baseline interval in `analysis['diffs']`
  (the interval the ablation table prints; 0 without one)."""
  metric = analysis['metric']
  errors = {}
  for a in arms:
    if metric not in a.metrics:
      continue
    d = analysis['diffs'].get(a.name)
    errors[a.name] = 0.0 if not d or math.isnan(d['lo']) else (d['hi'] - d['lo']) / 2
  return errors


def ablation_figure(arms: list, analysis: dict[str, Any]):
  """The Figure of `plot_ablation`."""
  metric = analysis['metric']
  values = {a.name: a.metrics[metric]['mean'] for a in arms if metric in a.metrics}
  pct = int(round(analysis.get('level', 0.95) * 100))
  return bars_figure(values, ablation_errors(arms, analysis), ylabel=metric,
                     title=f'{metric} per arm (bars: {pct}% CI of Δ vs baseline)')


def plot_ablation(path: str | pathlib.Path, arms: list,
                  analysis: dict[str, Any]) -> str:
  """Bars of the metric per arm; error bars: half the CI of Δ vs the baseline, the
  same interval the ablation table prints (`lattice.run.sweep.analyze`)."""
  return _save(ablation_figure(arms, analysis), path)

"""lattice.run.plots: the plotted data, read back from the figures."""

import json
import math

import numpy as np
import pytest

from lattice.run import plots, records, stats, sweep, tables


def _run(path, *, batch, seq_len, fpt=100.0):
  """A run folder as the train loop writes it: train rows every step, evals at 2, 4."""
  path.mkdir(parents=True)
  (path / 'config.json').write_text(json.dumps(
      {'data': {'batch_size': batch, 'seq_len': seq_len}}))
  (path / 'final_metrics.json').write_text(json.dumps({'flops_per_token': fpt}))
  rows = [{'step': s, 'loss': 5.5 if s == 1 else 3.0 - 0.1 * s} for s in range(1, 5)]
  rows += [{'step': 2, 'val_loss': 2.9, 'val_bpb': 4.2},
           {'step': 4, 'val_loss': 2.7, 'val_bpb': 3.9}]
  (path / 'metrics.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows))
  return path


def test_training_curves_in_tokens_and_flops(tmp_path):
  small = _run(tmp_path / 'small', batch=2, seq_len=8)
  big = _run(tmp_path / 'big', batch=4, seq_len=8, fpt=300.0)
  c = plots.training_curves({'small': small, 'big': big})
  assert c['small train'] == ([16.0, 32.0, 48.0, 64.0], [5.5, 2.8, 2.7, 2.6])
  assert c['small val'] == ([32.0, 64.0], [2.9, 2.7])
  assert c['big val'][0] == [64.0, 128.0]  # twice the tokens per step
  f = plots.training_curves({'big': big}, x='flops', val_key='val_bpb')
  assert f['big val'] == ([64.0 * 300, 128.0 * 300], [4.2, 3.9])
  with pytest.raises(ValueError, match='no final_metrics.json'):
    (small / 'final_metrics.json').unlink()
    plots.training_curves({'small': small}, x='flops')
  with pytest.raises(ValueError, match="x must be one of"):
    plots.training_curves({'small': small}, x='epochs')


def test_training_figure_fits_y_and_draws_the_reference(tmp_path):
  run = _run(tmp_path / 'r', batch=2, seq_len=8)
  fig = plots.training_figure({'r': run}, references={'unigram': 3.2})
  ax = fig.axes[0]
  lines = {l.get_label(): l for l in ax.get_lines()}
  assert list(lines['r train'].get_xdata()) == [16.0, 32.0, 48.0, 64.0]
  assert list(lines['r val'].get_ydata()) == [2.9, 2.7]
  assert set(lines['unigram'].get_ydata()) == {3.2}
  lo, hi = ax.get_ylim()
  # Fitted: the val curve and the reference inside; not from 0; the first train
  # point (5.5, the first 10% of the x range) left out of the fit.
  assert 2.0 < lo < 2.6 and 3.2 < hi < 4.0
  assert ax.get_xlabel() == 'training tokens'


def test_bars_do_not_start_at_zero_when_that_hides_the_difference():
  ax = plots.bars_figure({'a': 2.40, 'b': 2.45}, {'a': 0.01, 'b': 0.02},
                         ylabel='loss', title='t').axes[0]
  lo, hi = ax.get_ylim()
  assert 2.3 < lo < 2.39 and 2.47 < hi < 2.6
  ax = plots.bars_figure({'a': 1.0, 'b': 3.0}, None, ylabel='loss', title='t').axes[0]
  assert ax.get_ylim()[0] == 0.0


def _arm(name, value, values):
  return records.Arm(name, {'model.ffn.kind': value}, stats.aggregate(
      [{'val_loss': v} for v in values]), seeds=[0, 1, 2])


def test_one_effect_has_one_ci_in_the_tables_and_the_plot():
  grids = [('model.ffn.kind', ['dense', 'moe'])]
  arms = [_arm('dense', 'dense', [2.40, 2.46, 2.41]),
          _arm('moe', 'moe', [2.43, 2.47, 2.47])]
  analysis = sweep.analyze(arms, grids)
  d = analysis['diffs']['moe']
  # Seeds paired: the one-sample t interval of the per-seed differences.
  ref = stats.mean_ci([0.03, 0.01, 0.06])
  assert d['paired'] and (d['lo'], d['hi']) == pytest.approx((ref['lo'], ref['hi']))
  (effect,) = analysis['effects']
  assert (effect['lo'], effect['hi']) == pytest.approx((d['lo'], d['hi']))
  text = tables.sweep_markdown('t', arms, grids, analysis)
  assert text.count(f'[{d["lo"]:+.3g}, {d["hi"]:+.3g}]') == 2  # ablation and effects
  ax = plots.ablation_figure(arms, analysis).axes[0]
  bars = [c for c in ax.containers if hasattr(c, 'errorbar')][0]
  segments = bars.errorbar.lines[2][0].get_segments()  # one vertical line per bar
  halves = [(s[1][1] - s[0][1]) / 2 for s in segments]
  assert halves == pytest.approx([0.0, (d['hi'] - d['lo']) / 2])
  assert ax.get_ylim()[0] > 2.0  # fitted, not from 0


def test_other_seeds_fall_back_to_welch():
  # Disjoint seeds: nothing to pair, Welch's interval over all values.
  arms = [_arm('dense', 'dense', [2.40, 2.46, 2.41]),
          records.Arm('moe', {'model.ffn.kind': 'moe'}, stats.aggregate(
              [{'val_loss': v} for v in (2.43, 2.47)]), seeds=[5, 6])]
  d = sweep.analyze(arms, [('model.ffn.kind', ['dense', 'moe'])])['diffs']['moe']
  w = stats.diff_ci([2.43, 2.47], [2.40, 2.46, 2.41])
  assert not d['paired'] and d['lo'] == pytest.approx(w['lo'])
  assert math.isfinite(d['lo'])
  # Two shared seeds of three: paired over those two.
  arms[1].seeds = [0, 1]
  d = sweep.analyze(arms, [('model.ffn.kind', ['dense', 'moe'])])['diffs']['moe']
  p = stats.paired_diff_ci([2.43, 2.47], [2.40, 2.46])
  assert d['paired'] and (d['lo'], d['hi']) == pytest.approx((p['lo'], p['hi']))
  with pytest.raises(ValueError, match='pairs need one of each'):
    stats.paired_diff_ci([1.0], [1.0, 2.0])
  assert np.isnan(stats.paired_diff_ci([1.0], [2.0])['lo'])

"""lattice sweep: grids, statistics on planted numbers, resume, FLOP matching, and
seeds trained together under vmap == seeds trained one by one."""

import json
import math

import jax
import ml_collections
import numpy as np
import pytest
from scipy import stats as scipy_stats

from conftest import tiny_config
from lattice import config as config_lib
from lattice import experiment
from lattice.run import equal_flops, records, stats, sweep, tables
from lattice.train import loop, vmap_seeds


# ---------------------------------------------------------------------------
# Grids


def test_parse_grid_types_and_errors():
  assert sweep.parse_grid('model.linear.kind=float,bitnet') == (
      'model.linear.kind', ['float', 'bitnet'])
  assert sweep.parse_grid('optimizer.lr=1e-3, 3e-3') == ('optimizer.lr', [1e-3, 3e-3])
  assert sweep.parse_grid('model.n_layers=2,4') == ('model.n_layers', [2, 4])
  assert sweep.parse_grid('model.subln=true,false') == ('model.subln', [True, False])
  for bad in ('model.ffn.kind', 'model.ffn.kind=', 'model.ffn.kind=moe,moe', '1x=a,b'):
    with pytest.raises(config_lib.ConfigError, match='--grid'):
      sweep.parse_grid(bad)


def test_expand_is_the_full_product_baseline_first():
  arms = sweep.expand([('model.linear.kind', ['float', 'bitnet']),
                       ('model.ffn.kind', ['dense', 'moe']),
                       ('model.mtp.kind', ['none', 'parallel'])])
  assert len(arms) == 8
  assert arms[0] == {'name': 'float-dense-none', 'overrides': {
      'model.linear.kind': 'float', 'model.ffn.kind': 'dense', 'model.mtp.kind': 'none'}}
  combos = {tuple(a['overrides'].values()) for a in arms}
  assert len(combos) == 8 and len({a['name'] for a in arms}) == 8
  assert ('bitnet', 'moe', 'parallel') in combos
  # Values that spell the same folder name get their index.
  arms = sweep.expand([('a.x', ['a b', 'a_b']), ('a.y', ['1-2', '3'])])
  assert [a['name'] for a in arms] == ['a_b_0-1_2', 'a_b_0-3', 'a_b_1-1_2', 'a_b_1-3']
  assert arms[2]['overrides'] == {'a.x': 'a_b', 'a.y': '1-2'}
  with pytest.raises(config_lib.ConfigError, match='twice'):
    sweep.expand([('a.x', [1, 2]), ('a.x', [3])])


# ---------------------------------------------------------------------------
# Statistics on planted numbers


def test_diff_ci_is_welch():
  arm, base = [2.0, 2.2, 2.4], [1.0, 1.1, 1.2]
  d = stats.diff_ci(arm, base)
  # By hand: variances 0.04 and 0.01, se^2 = 0.05 / 3, Welch df = 2.941.
  se2 = 0.04 / 3 + 0.01 / 3
  df = se2 ** 2 / ((0.04 / 3) ** 2 / 2 + (0.01 / 3) ** 2 / 2)
  half = scipy_stats.t.ppf(0.975, df) * math.sqrt(se2)
  assert d['diff'] == pytest.approx(1.1)
  assert d['df'] == pytest.approx(df) and df == pytest.approx(2.941, abs=1e-3)
  assert (d['lo'], d['hi']) == pytest.approx((1.1 - half, 1.1 + half))
  ref = scipy_stats.ttest_ind(arm, base, equal_var=False).confidence_interval(0.95)
  assert (d['lo'], d['hi']) == pytest.approx((ref.low, ref.high))
  one = stats.diff_ci([2.0], [1.0, 1.5])
  assert one['diff'] == pytest.approx(0.75) and math.isnan(one['lo'])


def test_mean_ci_and_aggregate():
  m = stats.mean_ci([1.0, 2.0, 3.0])
  half = 4.302652729911275 * 1.0 / math.sqrt(3)  # t(0.975, 2) * sd / sqrt(n)
  assert m['mean'] == 2.0 and (m['lo'], m['hi']) == pytest.approx((2 - half, 2 + half))
  agg = stats.aggregate([{'val_loss': 1.0}, {'val_loss': 2.0}, {'val_loss': 3.0}])
  assert agg['val_loss']['mean'] == 2.0 and agg['val_loss']['std'] == pytest.approx(1.0)


def test_factorial_effects_recover_planted_effects():
  # y = 1 + 0.5 A + 0.2 B + 0.1 AB (+ 0.3 C, no interactions with C) + seed offset:
  # seed offsets cancel in every contrast, so the estimates are exact.
  levels = [['f', 'b'], ['d', 'm'], ['n', 'p']]
  offsets = [0.0, 0.37, -0.2]
  cells = {}
  for a in (0, 1):
    for b in (0, 1):
      for c in (0, 1):
        y = 1 + 0.5 * a + 0.2 * b + 0.1 * a * b + 0.3 * c
        cells[(levels[0][a], levels[1][b], levels[2][c])] = [y + o for o in offsets]
  effects = {e['effect']: e for e in stats.factorial_effects(cells, levels, 'ABC')}
  assert effects['A: b vs f']['mean'] == pytest.approx(0.55)  # 0.5 + 0.1 * mean(B)
  assert effects['B: m vs d']['mean'] == pytest.approx(0.25)
  assert effects['C: p vs n']['mean'] == pytest.approx(0.3)
  assert effects['A=b x B=m']['mean'] == pytest.approx(0.1)
  assert effects['A=b x C=p']['mean'] == pytest.approx(0.0, abs=1e-12)
  assert effects['A=b x B=m']['lo'] == pytest.approx(0.1)  # no noise: zero width
  # Noise in one cell widens the interval around the same estimate.
  noisy = {k: list(v) for k, v in cells.items()}
  noisy[('b', 'm', 'n')] = [v + e for v, e in zip(noisy[('b', 'm', 'n')],
                                                    (0.05, -0.05, 0.0))]
  e = {x['effect']: x for x in stats.factorial_effects(noisy, levels, 'ABC')}
  inter = e['A=b x B=m']
  per_seed = [0.1 + 0.5 * d for d in (0.05, -0.05, 0.0)]  # cell (b,m,n) is half the mean
  ref = stats.mean_ci(per_seed)
  assert inter['per_seed'] == pytest.approx(per_seed)
  assert (inter['lo'], inter['hi']) == pytest.approx((ref['lo'], ref['hi']))
  assert inter['lo'] < 0.1 < inter['hi']


def test_analyze_with_an_arm_on_more_seeds_uses_the_common_ones():
  # One factor, two arms; 'on' ran seeds 0-4, 'off' 0-2. y(on) - y(off) = 0.1 on the
  # shared seeds; seeds 3-4 of 'on' are wild and must not enter the paired effect.
  grids = [('model.x', ['off', 'on'])]
  def arm(name, level, values, seeds):
    return records.Arm(name, {'model.x': level}, stats.aggregate(
        [{'val_loss': v} for v in values]), train_flops=1e10, seeds=list(seeds),
        extra={'history': [[{'step': 1, 'val_loss': v}] for v in values]})
  off = arm('off', 'off', [2.0, 2.3, 1.9], (0, 1, 2))
  on = arm('on', 'on', [2.1, 2.4, 2.0, 9.0, -5.0], (0, 1, 2, 3, 4))
  an = sweep.analyze([off, on], grids)
  assert an['diffs']['on']['paired'] and an['diffs']['on']['diff'] == pytest.approx(0.1)
  effect = an['effects'][0]
  assert effect['mean'] == pytest.approx(0.1) and effect['lo'] == pytest.approx(0.1)


def test_value_at_flops_interpolates_in_log_flops():
  history = [{'step': 50, 'val_loss': 3.0}, {'step': 100, 'val_loss': 2.0}]
  at = equal_flops.value_at_flops(history, 1e10, 7.5e9)
  assert at == pytest.approx(3.0 - math.log(1.5) / math.log(2.0))
  assert equal_flops.value_at_flops(history, 1e10, 1e10) == 2.0
  assert equal_flops.value_at_flops(history, 1e10, 1.01e10) == 2.0  # within rtol: clamped
  assert math.isnan(equal_flops.value_at_flops(history, 1e10, 2e9))  # before the first eval
  arms = [records.Arm('a', {}, {}, train_flops=1e10, extra={'history': [history]}),
          records.Arm('b', {}, {}, train_flops=7.5e9, extra={'history': [history]})]
  target, values = equal_flops.equal_flops(arms)
  assert target == 7.5e9 and values['b']['mean'] == 2.0
  assert values['a']['mean'] == pytest.approx(at)
  line = tables.equal_flops_line(arms)
  assert line.startswith('At equal training FLOPs (7.5e9') and '**b** 2' in line


# ---------------------------------------------------------------------------
# Running: resume, FLOP matching, vmap == sequential


def _base(**train) -> ml_collections.ConfigDict:
  c = experiment.pick_mode('smoke', {'smoke': lambda: ml_collections.ConfigDict(
      tiny_config(train={'steps': 3, 'eval_every': 0, **train},
                  checkpoint=dict(enabled=False)))})
  return c


def test_sweep_resumes_without_rerunning_and_aggregates(tmp_path, monkeypatch):
  grids = [('model.ffn.kind', ['dense', 'moe'])]
  out = sweep.run_sweep(_base(), tmp_path, grids, seeds=[0, 1], vmap_seeds=False)
  table = (tmp_path / sweep.TABLE_FILE).read_text()
  assert '| **dense** |' in table and '| **moe** |' in table and '(baseline)' in table
  saved = json.loads((tmp_path / sweep.SWEEP_FILE).read_text())
  by = {a['name']: a for a in saved['arms']}
  for name in ('dense', 'moe'):
    vals = [json.loads((tmp_path / name / f'seed_{s}' / 'record.json').read_text())
            ['measured']['val_loss'] for s in (0, 1)]
    assert by[name]['metrics']['val_loss']['values'] == vals
    assert by[name]['metrics']['val_loss']['std'] == pytest.approx(np.std(vals, ddof=1))
  assert saved['analysis']['diffs']['moe']['diff'] == pytest.approx(
      by['moe']['metrics']['val_loss']['mean'] - by['dense']['metrics']['val_loss']['mean'])

  def no_training(*a, **k):
    raise AssertionError('a finished arm was trained again')
  monkeypatch.setattr(loop, 'train_and_evaluate', no_training)
  again = sweep.run_sweep(_base(), tmp_path, grids, seeds=[0, 1], vmap_seeds=False)
  assert again['table'] == out['table']
  # Another config in the same folders is refused, not silently resumed.
  other = _base()
  other.optimizer.lr = 1e-2
  with pytest.raises(config_lib.ConfigError, match='different config'):
    sweep.run_sweep(other, tmp_path, grids, seeds=[0], vmap_seeds=False)
  # Other grids in the same workdir would replace its ablation table: refused.
  with pytest.raises(config_lib.ConfigError, match='other grids.*model.ffn.kind=dense,moe'):
    sweep.run_sweep(_base(), tmp_path, [('model.ffn.kind', ['moe', 'dense'])], seeds=[0],
                    vmap_seeds=False)
  assert (tmp_path / sweep.TABLE_FILE).read_text() == table


def test_an_arm_may_run_its_own_seeds():
  from lattice.run import arms as arms_lib  # pylint: disable=g-import-not-at-top
  config = _base()
  config.seeds = [0, 1, 2]
  config.arms = [{'name': 'a', 'overrides': {}},
                 {'name': 'b', 'overrides': {}, 'seeds': [0, 1, 2, 3, 4]}]
  assert arms_lib.arm_seeds(config) == {'a': [0, 1, 2], 'b': [0, 1, 2, 3, 4]}
  config.arms[1]['seeds'] = [3, 3]
  with pytest.raises(config_lib.ConfigError, match='arms: b: seeds'):
    arms_lib.validate_arms(config)


def test_a_preempted_seed_stops_the_arm(tmp_path, monkeypatch):
  """After a seed saves on SIGTERM, no further seed starts and Preempted is raised
  (it used to train the next seed, so one SIGTERM per seed was needed to stop)."""
  from lattice.run import arms as arms_lib  # pylint: disable=g-import-not-at-top
  from lattice.train.recorder import RunOutput  # pylint: disable=g-import-not-at-top
  started = []

  def fake_train(cfg, workdir):
    started.append(workdir.name)
    return RunOutput({'preempted': True, 'steps': 1}, None, None)
  monkeypatch.setattr(loop, 'train_and_evaluate', fake_train)
  config = _base()
  config.seeds = [0, 1, 2]
  config.arms = [{'name': 'a', 'overrides': {}}]
  with pytest.raises(arms_lib.Preempted, match="arm 'a' seed 0"):
    arms_lib.run_arms(config, tmp_path, vmap_seeds=False)
  assert started == ['seed_0']


def test_run_sweep_refuses_arm_seeds_of_an_unknown_arm(tmp_path):
  with pytest.raises(config_lib.ConfigError, match="arm_seeds: no arm 'nope'"):
    sweep.run_sweep(_base(), tmp_path, [('model.ffn.kind', ['dense', 'moe'])], seeds=[0],
                    arm_seeds={'nope': [0, 1]})


def test_match_flops_sets_steps_from_the_budget():
  config = _base()
  dense = experiment.arm_config(config, {}, 0)
  mtp = experiment.arm_config(config, {'model.mtp.kind': 'parallel', 'model.mtp.n': 3}, 0)
  fd, fm = experiment.flops_per_token(dense), experiment.flops_per_token(mtp)
  m = mtp.model
  vocab = loop.resolve(mtp).model.vocab_size
  d, kv = m.d_model, 2 * m.head_dim  # tiny_config: 2 KV heads
  block = 2 * d * d + 2 * d * kv + 3 * d * m.d_ff  # one head block's matrices
  # n=3 heads: 2 more blocks (weights and attention) and 2 more unembedding passes.
  extra = 2 * (6 * block + 6 * vocab * d + 12 * 16 * m.n_heads * m.head_dim)
  assert fm == pytest.approx(fd + extra)
  tokens_per_step = 8 * 16
  config.flops_budget = 100 * fd * tokens_per_step
  a = experiment.arm_config(config, {}, 0)
  b = experiment.arm_config(config, {'model.mtp.kind': 'parallel', 'model.mtp.n': 3}, 0)
  assert a.train.steps == 100 and b.train.steps == round(100 * fd / fm) < 100
  assert b.optimizer.warmup_steps == max(1, round(2 * b.train.steps / 3))
  config.flops_budget = 1.0
  with pytest.raises(config_lib.ConfigError, match='less than one step'):
    experiment.arm_config(config, {}, 0)


def test_vmapped_seeds_equal_sequential_seeds(tmp_path):
  # MoE with the loss-free bias (state.extra) and MTP heads: the most stateful step.
  overrides = {'model.ffn.kind': 'moe', 'model.ffn.router': 'sigmoid',
               'model.ffn.bias_rate': 1e-2, 'model.mtp.kind': 'parallel',
               'model.mtp.n': 2}
  cfg = config_lib.replace(experiment.arm_config(_base(eval_every=2), overrides, 0),
                           **{'checkpoint.enabled': True, 'checkpoint.every': 2})
  seeds = [0, 3]
  together = vmap_seeds.train_seeds(cfg, seeds, tmp_path / 'vmap')
  for seed, out in zip(seeds, together):
    alone = loop.train_and_evaluate(config_lib.replace(cfg, **{'train.seed': seed}),
                                    tmp_path / f'seq_{seed}')
    for a, b in zip(jax.tree.leaves(alone.state), jax.tree.leaves(out.state)):
      np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64),
                                 atol=2e-6, rtol=1e-5)
    assert out.metrics['val_loss'] == pytest.approx(alone.metrics['val_loss'], abs=1e-5)
    assert [h['step'] for h in out.metrics['history']] == [h['step'] for h in alone.metrics['history']]
    assert out.metrics['train_loss'] == pytest.approx(alone.metrics['train_loss'], abs=1e-5)
    rows = (tmp_path / 'vmap' / f'seed_{seed}' / 'metrics.jsonl').read_text().splitlines()
    assert json.loads(rows[-1])['val_loss'] == pytest.approx(out.metrics['val_loss'])
  # Interrupted after step 2 and resumed (stacked checkpoint) == uninterrupted.
  vmap_seeds.train_seeds(cfg, seeds, tmp_path / 'resumed', stop_after=2)
  resumed = vmap_seeds.train_seeds(cfg, seeds, tmp_path / 'resumed')
  for a, b in zip(together, resumed):
    for x, y in zip(jax.tree.leaves(a.state), jax.tree.leaves(b.state)):
      np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_cli_errors_are_one_line(capsys):
  from lattice import cli
  cases = [
      (['experiments/baseline_lm.py:smoke', '--workdir', '/tmp/x'], '--grid'),
      (['experiments/baseline_lm.py:smoke', '--workdir', '/tmp/x', '--grid',
        'model.ffn.kindd=dense,moe'], 'kindd'),
      (['experiments/baseline_lm.py:smoke', '--workdir', '/tmp/x', '--grid',
        'model.ffn.kind=dense,moe', '--seeds', '0'], '--seeds'),
      (['nope.py:smoke', '--workdir', '/tmp/x', '--grid', 'a.b=1,2'], 'nope.py'),
      (['experiments/baseline_lm.py:smoke', '--workdir', '/tmp/x', '--grid',
        'model.ffn.kindd=dense,moe'], "did you mean 'kind'"),
      (['experiments/baseline_lm.py:smoke', '--workdir', '/tmp/x', '--grid',
        'model.ffn.kind=dense,moe', '--set', 'train.steps=abc'],
       "--set: train.steps: expected an integer, got 'abc'"),
      (['experiments/baseline_lm.py:smoke', '--workdir', '/tmp/x', '--grid',
        'model.ffn.kind=dense,moe', '--set', 'train.stepz=3'], "did you mean 'steps'"),
  ]
  for argv, needle in cases:
    with pytest.raises(SystemExit) as e:
      cli.main(['sweep', *argv])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('lattice: error: sweep:') and needle in err[0]


def test_a_preempted_sweep_exits_143(tmp_path, monkeypatch, capsys):
  """`lattice sweep` after a seed saved on SIGTERM: exit 143 (arms.PREEMPTED_EXIT), so
  a supervisor reruns it (a rerun resumes); it used to exit 0 as if finished."""
  from lattice import cli
  from lattice.run import arms as arms_lib  # pylint: disable=g-import-not-at-top

  def preempted(*args, **kwargs):
    raise arms_lib.Preempted("arm 'a' seed 0 saved its checkpoint on SIGTERM")
  monkeypatch.setattr(sweep, 'run_sweep', preempted)
  with pytest.raises(SystemExit) as e:
    cli.main(['sweep', 'experiments/baseline_lm.py:smoke', '--workdir', str(tmp_path),
              '--grid', 'model.ffn.kind=dense,moe'])
  assert e.value.code == arms_lib.PREEMPTED_EXIT == 143
  assert 'rerun the same command to resume' in capsys.readouterr().out

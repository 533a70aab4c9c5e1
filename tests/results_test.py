"""Tests for lattice.run.records, stats, equal_flops, tables and plots."""

import json
import math
import subprocess

import jax.numpy as jnp
import numpy as np
import pytest

from lattice.run import plots, records, stats, tables

# A fixed env keeps these tests independent of the machine and fast (no jax init).
ENV = {'jax': '0.0.0', 'backend': 'cpu', 'device_count': 1, 'device_kind': 'cpu',
       'git_commit': 'abc1234'}


def make_result(checks=None, **kw) -> records.Result:
  arms = [
      records.Arm('baseline', {}, stats.aggregate([{'loss': 2.0}, {'loss': 2.2}]),
                  params=1_200_000, active_params=1_200_000, train_flops=1.2e12,
                  tokens=65536, wall_s=12.5, seeds=[0, 1]),
      records.Arm('bitnet', {'model.linear.kind': 'bitnet'},
                  stats.aggregate([{'loss': 2.1, 'ppl': 8.0},
                                     {'loss': 2.3, 'ppl': 9.0}]),
                  params=1_200_000, seeds=[0, 1],
                  extra={'curve': np.arange(3, dtype=np.float32)}),
  ]
  if checks is None:
    checks = [records.check('loss gap < 0.2', np.bool_(True), 'gap 0.1 (2.2 vs 2.1)')]
  fields = dict(experiment='bitnet_b158', paper={'title': 'The Era of 1-bit LLMs',
                                                 'arxiv': '2402.17764'},
                claim='ternary matches float loss', mode='smoke', arms=arms,
                checks=checks, headline={'paper': 'ppl 9.91 vs 9.72',
                                         'ours': 'loss 2.2 vs 2.1'},
                env=dict(ENV), plots=['loss.png'])
  fields.update(kw)
  return records.Result(**fields)


class TestAggregate:

  def test_mean_and_sample_std(self):
    agg = stats.aggregate([{'a': 1.0}, {'a': 2.0}, {'a': 6.0}])
    assert agg['a']['mean'] == pytest.approx(3.0)
    # Sample variance: ((1-3)^2 + (2-3)^2 + (6-3)^2) / 2 = 7.
    assert agg['a']['std'] == pytest.approx(math.sqrt(7.0))
    assert agg['a']['n'] == 3
    assert agg['a']['values'] == [1.0, 2.0, 6.0]

  def test_one_seed_has_zero_std(self):
    agg = stats.aggregate([{'a': 4.5}])
    assert agg['a'] == {'mean': 4.5, 'std': 0.0, 'n': 1, 'values': [4.5]}

  def test_nan_propagates_and_is_kept(self):
    agg = stats.aggregate([{'a': 1.0}, {'a': float('nan')}])
    assert math.isnan(agg['a']['mean'])
    assert math.isnan(agg['a']['values'][1])
    assert agg['a']['n'] == 2

  def test_missing_keys_use_seeds_that_have_them(self):
    agg = stats.aggregate([{'a': 1.0, 'b': 10.0}, {'a': 3.0}])
    assert agg['a']['mean'] == pytest.approx(2.0)
    assert agg['b'] == {'mean': 10.0, 'std': 0.0, 'n': 1, 'values': [10.0]}

  def test_jax_and_numpy_scalars(self):
    agg = stats.aggregate([{'a': jnp.float32(1.0)}, {'a': np.float64(3.0)}])
    assert agg['a']['mean'] == pytest.approx(2.0)
    assert all(type(v) is float for v in agg['a']['values'])

  def test_non_number_names_metric(self):
    with pytest.raises(ValueError, match="'a'"):
      stats.aggregate([{'a': 'high'}])


def test_check_coerces_bools():
  c = records.check('x', jnp.array(1.0) < 2.0, 'detail')
  assert c.passed is True and type(c.passed) is bool
  assert records.check('y', np.bool_(False), 'd').passed is False
  with pytest.raises(ValueError, match="'z'"):
    records.check('z', np.array([True, False]), 'd')


class TestResult:

  def test_reproduced(self):
    assert make_result().reproduced
    assert not make_result(checks=[]).reproduced
    failed = [records.check('a', True, ''), records.check('b', False, '')]
    assert not make_result(checks=failed).reproduced

  def test_round_trip(self, tmp_path):
    r = make_result()
    r.write(tmp_path)
    d = json.loads((tmp_path / 'result.json').read_text())
    assert d['reproduced'] is True
    assert d['arms'][1]['extra']['curve'] == [0.0, 1.0, 2.0]
    loaded = records.Result.load(tmp_path)
    assert loaded.to_json() == r.to_json()
    assert records.Result.load(tmp_path / 'result.json').arms[1].overrides == {
        'model.linear.kind': 'bitnet'}
    # The atomic write leaves no temporary files behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == ['result.json', 'table.md']

  def test_nan_survives_round_trip(self, tmp_path):
    r = make_result()
    r.arms[0].metrics = stats.aggregate([{'loss': float('nan')}])
    r.write(tmp_path)
    assert math.isnan(records.Result.load(tmp_path).arms[0].metrics['loss']['mean'])

  def test_default_env(self):
    env = make_result(env=records.env_info()).env
    for key in ('jax', 'jaxlib', 'flax', 'optax', 'backend', 'device_count',
                'process_count', 'device_kind', 'python', 'platform', 'git_commit',
                'hostname', 'timestamp'):
      assert key in env
    assert env['device_count'] >= 1
    records.validate_result_json(make_result(env=env).to_json())


class TestGitCommit:

  def test_not_a_repo(self, tmp_path):
    assert records.git_commit(tmp_path) is None

  def test_clean_and_dirty(self, tmp_path):
    def git(*args):
      subprocess.run(['git', '-c', 'user.name=t', '-c', 'user.email=t@t', *args],
                     cwd=tmp_path, check=True, capture_output=True)
    git('init', '-q')
    (tmp_path / 'f').write_text('1')
    git('add', 'f')
    git('commit', '-q', '-m', 'x')
    sha = records.git_commit(tmp_path)
    assert sha and len(sha) >= 7 and not sha.endswith('-dirty')
    (tmp_path / 'f').write_text('2')
    assert records.git_commit(tmp_path) == sha + '-dirty'

  def test_committed_results_are_not_code(self, tmp_path):
    # reproduce_all.sh copies each result into results/ before the next experiment:
    # the next one still ran the clean commit's code. Code beside them still counts.
    def git(*args):
      subprocess.run(['git', '-c', 'user.name=t', '-c', 'user.email=t@t', *args],
                     cwd=tmp_path, check=True, capture_output=True)
    git('init', '-q')
    (tmp_path / 'results' / 'a').mkdir(parents=True)
    for f in ('f', 'REPRODUCTIONS.md', 'results/a/result.json'):
      (tmp_path / f).write_text('1')
    git('add', '.')
    git('commit', '-q', '-m', 'x')
    sha = records.git_commit(tmp_path)
    (tmp_path / 'results' / 'a' / 'result.json').write_text('2')
    (tmp_path / 'REPRODUCTIONS.md').write_text('2')
    assert records.git_commit(tmp_path) == sha
    assert records.git_commit(tmp_path / 'results') == sha  # from a subfolder too
    (tmp_path / 'f').write_text('2')
    assert records.git_commit(tmp_path) == sha + '-dirty'


class TestValidate:

  def test_accepts_written(self, tmp_path):
    make_result().write(tmp_path)
    records.validate_result_json(json.loads((tmp_path / 'result.json').read_text()))

  @pytest.mark.parametrize('field', ['experiment', 'paper', 'claim', 'mode', 'arms',
                                     'checks', 'reproduced', 'env'])
  def test_rejects_missing_top_level(self, field):
    d = make_result().to_json()
    del d[field]
    with pytest.raises(ValueError, match=field):
      records.validate_result_json(d)

  def test_rejects_arm_metric_without_mean(self):
    d = make_result().to_json()
    del d['arms'][1]['metrics']['ppl']['mean']
    with pytest.raises(ValueError, match=r"arms\[1\]\.metrics\['ppl'\]\.mean"):
      records.validate_result_json(d)

  @pytest.mark.parametrize('path,value,match', [
      (('paper', 'arxiv'), None, 'paper.arxiv'),
      (('arms', 0, 'train_flops'), 'lots', r'arms\[0\]\.train_flops'),
      (('checks', 0, 'passed'), 'yes', r'checks\[0\]\.passed'),
      (('env', 'device_count'), '1', 'env.device_count'),
      (('mode',), 'medium', 'mode'),
      (('reproduced',), False, 'reproduced'),  # Disagrees with the checks.
  ])
  def test_rejects_bad_field(self, path, value, match):
    d = make_result().to_json()
    target = d
    for key in path[:-1]:
      target = target[key]
    target[path[-1]] = value
    with pytest.raises(ValueError, match=match):
      records.validate_result_json(d)

  def test_load_names_file(self, tmp_path):
    (tmp_path / 'result.json').write_text('{"experiment": "x"}')
    with pytest.raises(ValueError, match='result.json.*paper'):
      records.Result.load(tmp_path)


def test_table_md(tmp_path):
  failed = [records.check('loss gap < 0.2', True, 'gap 0.1'),
            records.check('ppl within 5%', False, 'ppl 8.5 vs 8.0')]
  make_result(checks=failed).write(tmp_path)
  md = (tmp_path / 'table.md').read_text()
  assert '# bitnet_b158' in md
  assert '[The Era of 1-bit LLMs](https://arxiv.org/abs/2402.17764)' in md
  assert 'not reproduced (1/2 checks)' in md
  assert '**baseline**' in md and '**bitnet**' in md
  assert '2.1 ± 0.14' in md  # baseline loss over seeds 2.0 and 2.2.
  assert '8.5 ± 0.71' in md
  assert '1.2e12' in md and '1.2M' in md and '65.5K' in md
  assert '✓ **loss gap < 0.2**: gap 0.1' in md
  assert '✗ **ppl within 5%**: ppl 8.5 vs 8.0' in md
  assert '![loss.png](loss.png)' in md
  assert "`model.linear.kind='bitnet'`" in md
  # The metric the baseline lacks is a dash, not a crash.
  assert '—' in md.split('**baseline**')[1].splitlines()[0]


def test_formatting():
  assert tables.fmt_sci(1.234e12) == '1.2e12'
  assert tables.fmt_sci(3e-7) == '3.0e-7'
  assert tables.fmt_number(float('nan')) == 'nan'
  assert tables.fmt_number(3) == '3'
  assert tables.fmt_number(0.123456) == '0.1235'
  assert tables.fmt_count(950) == '950'
  assert tables.fmt_count(7e9) == '7B'
  assert tables.arxiv_url('arXiv:2402.17764') == 'https://arxiv.org/abs/2402.17764'
  assert tables.cell('a | b\nc') == r'a \| b c'


def _is_png(path):
  return path.stat().st_size > 1000 and path.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_plot_series(tmp_path):
  path = tmp_path / 'sub' / 'loss.png'
  name = plots.plot_series(
      path, {'baseline': ([1, 10, 100], [3.0, 2.5, 2.0]),
             'bitnet': (np.arange(1, 4), jnp.array([3.1, float('nan'), 2.1]))},
      xlabel='step', ylabel='loss', title='Loss', logx=True, logy=True)
  assert name == 'loss.png' and _is_png(path)
  with pytest.raises(ValueError, match="'bad'"):
    plots.plot_series(tmp_path / 'x.png', {'bad': ([1, 2], [1.0])},
                        xlabel='x', ylabel='y', title='t')


def test_plot_bars(tmp_path):
  name = plots.plot_bars(tmp_path / 'bars.png', {'float': 2.0, 'ternary': 2.1},
                           {'float': 0.1, 'ternary': 0.05}, ylabel='loss',
                           title='Final loss')
  assert name == 'bars.png' and _is_png(tmp_path / 'bars.png')
  plots.plot_bars(tmp_path / 'nobars.png', {'a': 1.0}, None, ylabel='y', title='t')
  assert _is_png(tmp_path / 'nobars.png')

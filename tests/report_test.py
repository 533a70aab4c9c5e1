"""Tests for lattice.report."""

import pytest

from lattice import cli, report
from lattice.run import plots, records, stats

ENV = {'jax': '0.0.0', 'backend': 'cpu', 'device_count': 1, 'git_commit': None}


def write_result(workdir, experiment, passed, mode='quick'):
  arm = records.Arm('baseline', {}, stats.aggregate([{'loss': 2.0}]), seeds=[0])
  checks = [records.check('direction', True, 'a < b'),
            records.check('magnitude', passed, 'gap 0.05 vs 0.1')]
  r = records.Result(
      experiment=experiment,
      paper={'title': f'Paper {experiment}', 'arxiv': '2401.00001'},
      claim=f'{experiment} helps', mode=mode, arms=[arm], checks=checks,
      headline={'paper': '-0.1 loss', 'ours': '-0.05 loss'}, env=dict(ENV),
      plots=['loss.png'])
  plots.plot_bars(workdir / 'loss.png', {'baseline': 2.0}, None, ylabel='loss',
                    title='loss')
  r.write(workdir)
  return r


@pytest.fixture
def runs(tmp_path):
  runs = tmp_path / 'runs'
  write_result(runs / 'mtp' / 'quick', 'mtp_gloeckle', passed=True)
  write_result(runs / 'moe', 'moe_lossfree', passed=False, mode='smoke')
  (runs / 'broken').mkdir()
  (runs / 'broken' / 'result.json').write_text('{"experiment": "broken", ')
  return runs


def test_collect_skips_corrupt_with_warning(runs):
  with pytest.warns(UserWarning, match=r'broken[/\\]result.json'):
    found = report.collect(runs)
  assert [r.experiment for _, r in found] == ['moe_lossfree', 'mtp_gloeckle']
  assert found[1][0] == runs / 'mtp' / 'quick'


def test_render_summary(runs, tmp_path):
  with pytest.warns(UserWarning):
    found = report.collect(runs)
  md = report.render(found, runs, link_base=tmp_path)
  header = ("| run | experiment | paper | claim | paper's number | ours | verdict "
            '| mode | seeds | arm time s | plots |')
  assert header in md
  # Rows are labelled by their folder under the runs folder, then the experiment.
  by_run = {line.split(']')[0][3:]: line for line in md.splitlines()
            if line.startswith('| [')}
  assert set(by_run) == {'mtp/quick', 'moe'}
  rows = {'mtp_gloeckle': by_run['mtp/quick'], 'moe_lossfree': by_run['moe']}
  assert '| mtp_gloeckle |' in rows['mtp_gloeckle']
  assert '✓ reproduced' in rows['mtp_gloeckle']
  assert 'not reproduced (1/2 checks)' in rows['moe_lossfree']
  assert '(runs/mtp/quick/table.md)' in rows['mtp_gloeckle']
  assert '[loss.png](runs/moe/loss.png)' in rows['moe_lossfree']
  paper = '[Paper mtp_gloeckle](https://arxiv.org/abs/2401.00001)'
  assert paper in rows['mtp_gloeckle']
  assert '| -0.1 loss | -0.05 loss |' in rows['mtp_gloeckle']
  assert '| quick | 1 | 0 |' in rows['mtp_gloeckle']  # seeds, summed arm wall s
  assert 'Results by commit (not one commit): `unknown` (2).' in md
  assert 'broken' not in md
  # Per-experiment sections reuse the table.md renderer, plots linked from link_base.
  assert '## mtp_gloeckle' in md and '### Checks' in md
  assert '![loss.png](runs/mtp/quick/loss.png)' in md
  assert '2 results' in md and '1 reproduced' in md


def test_main_writes_output(runs, tmp_path, monkeypatch, capsys):
  monkeypatch.chdir(tmp_path)
  with pytest.warns(UserWarning):
    cli.main(['report', str(runs)])
  # By default the report goes into the runs folder, never over ./REPRODUCTIONS.md.
  assert not (tmp_path / report.DEFAULT_OUT).exists()
  written = runs / report.DEFAULT_OUT
  md = written.read_text()
  assert 'mtp_gloeckle' in md and 'moe_lossfree' in md
  assert written.stat().st_mode & 0o777 == 0o644
  assert 'wrote' in capsys.readouterr().out
  out = tmp_path / 'docs' / 'r.md'
  with pytest.warns(UserWarning):
    cli.main(['report', str(runs), '--out', str(out)])
  # Links are relative to the output file's folder.
  assert '](../runs/mtp/quick/loss.png)' in out.read_text()


def test_main_missing_dir(tmp_path, capsys):
  missing = tmp_path / 'nope'
  with pytest.raises(SystemExit) as e:
    cli.main(['report', str(missing)])
  assert e.value.code == 2
  err = capsys.readouterr().err
  assert err.startswith('lattice: error: report:') and 'nope' in err
  assert 'does not exist' in err and err.count('\n') == 1


def test_main_no_results(tmp_path, capsys):
  (tmp_path / 'empty').mkdir()
  with pytest.raises(SystemExit) as e:
    cli.main(['report', str(tmp_path / 'empty'), '--out', str(tmp_path / 'r.md')])
  assert e.value.code == 2 and 'no valid result.json' in capsys.readouterr().err
  assert not (tmp_path / 'r.md').exists()

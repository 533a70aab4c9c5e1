"""Tests for lattice.main and lattice.cli: bad input ends in one line naming the field.

Each case runs the command line's entry point (`lattice.main.cli`, `lattice.cli.main`)
with its arguments and must fail before training starts: exit code 2, a short
stderr without a traceback whose last line is `lattice: error: ...` naming the flag
or config field. Most cases run in this process (the jax import is paid once);
`SUBPROCESS` cases run the real `python -m ...` command line in a subprocess, as a
user would: the ones that need a one-device process, and one of each entry point,
so the end-to-end path (module `__main__`, exit status, stderr) stays tested.
"""

import concurrent.futures
import contextlib
import io
import os
import pathlib
import subprocess
import sys
import time
import traceback

import pytest

from lattice.run import records, stats
from conftest import XLA_TEST_FLAGS

ROOT = pathlib.Path(__file__).resolve().parents[1]
SMOKE = '--config=experiments/baseline_lm.py:smoke'
EIGHT = '--xla_force_host_platform_device_count=8'

BROKEN_EXPERIMENT = '''
def get_config(arg=None):
  raise RuntimeError('boom in get_config')

def run(config, workdir):
  raise AssertionError('never reached')
'''


def _cases(tmp):
  """name -> (module, args, XLA_FLAGS, substrings the last stderr line must hold)."""
  work = str(tmp / 'work')
  binary = tmp / 'weights.bin'
  text = ['--config.data.source=text']
  return {
      'missing_config_file': ('lattice.main', [
          '--config=experiments/no_such_exp.py:smoke', f'--workdir={work}'], '',
          ['--config', 'no such experiment file', 'experiments/no_such_exp.py']),
      'missing_config_file_with_override': ('lattice.main', [
          '--config=experiments/no_such_exp.py:smoke', '--config.model.d_model=8',
          f'--workdir={work}'], '', ['no such experiment file', 'no_such_exp.py']),
      'missing_config_flag': ('lattice.main', [f'--workdir={work}'], '',
                              ['--config=FILE.py:MODE is required']),
      'unknown_mode': ('lattice.main', [
          '--config=experiments/baseline_lm.py:bogus', f'--workdir={work}'], '',
          ["--config: unknown mode 'bogus'", 'smoke, quick, medium, full']),
      'broken_experiment': ('lattice.main', [
          f'--config={tmp / "broken_exp.py"}:smoke', f'--workdir={work}'], '',
          ['--config', 'broken_exp.py', 'RuntimeError: boom in get_config']),
      'unknown_key': ('lattice.main', [
          SMOKE, '--config.model.d_modle=3', f'--workdir={work}'], '',
          ['--config.model.d_modle: unknown config key', "did you mean 'd_model'"]),
      'unknown_section': ('lattice.main', [
          SMOKE, '--config.optimiser.lr=0.1', f'--workdir={work}'], '',
          ["--config.optimiser.lr: unknown config key 'optimiser'",
           "did you mean 'optimizer'"]),
      'mistyped_int': ('lattice.main', [
          SMOKE, '--config.model.d_model=abc', f'--workdir={work}'], '',
          ["--config.model.d_model: expected an integer, got 'abc'"]),
      'mistyped_float': ('lattice.main', [
          SMOKE, '--config.optimizer.lr=fast', f'--workdir={work}'], '',
          ["--config.optimizer.lr: expected a number, got 'fast'"]),
      'negative_size': ('lattice.main', [
          SMOKE, '--config.model.n_layers=-1', f'--workdir={work}'], '',
          ['model.n_layers: must be positive, got -1']),
      'heads_not_dividing_d_model': ('lattice.main', [
          SMOKE, '--config.model.attention.n_heads=5', f'--workdir={work}'], '',
          ['model.attention.n_heads: 5 heads do not divide model.d_model=32']),
      'mesh_one_device': ('lattice.main', [
          SMOKE, '--config.mesh.tensor=3', f'--workdir={work}'], '',
          ['mesh: fsdp*expert*tensor = 3 does not divide the 1 available devices']),
      'mesh_eight_devices': ('lattice.main', [
          SMOKE, '--config.mesh.tensor=3', f'--workdir={work}'], EIGHT,
          ['mesh: fsdp*expert*tensor = 3 does not divide the 8 available devices']),
      'batch_not_divisible_by_mesh': ('lattice.main', [
          SMOKE, '--config.data.batch_size=12', f'--workdir={work}'], EIGHT,
          ['data.batch_size: 12 is not divisible by the data*fsdp*expert = 8']),
      'missing_workdir': ('lattice.main', [SMOKE], '', ['--workdir is required']),
      'workdir_is_a_file': ('lattice.main', [SMOKE, f'--workdir={tmp / "a_file"}'],
                            '', ['--workdir', 'a_file', 'is not a folder']),
      'text_missing_path': ('lattice.main', [
          SMOKE, *text, f'--config.data.paths={tmp / "nonexistent"}',
          f'--workdir={work}'], '', ['data.paths:', 'nonexistent', 'does not exist']),
      'text_binary_file': ('lattice.main', [
          SMOKE, *text, f'--config.data.paths={binary}', f'--workdir={work}'], '',
          ['data.paths:', 'weights.bin', 'looks binary']),
      'text_empty_folder': ('lattice.main', [
          SMOKE, *text, f'--config.data.paths={tmp / "empty"}', f'--workdir={work}'],
          '', ['data.paths: folder', 'empty', 'holds no data files']),
      'cli_run': ('lattice.cli', [
          'run', SMOKE, '--config.model.attention.n_heads=5', f'--workdir={work}'],
          '', ['model.attention.n_heads: 5 heads do not divide']),
      'cli_unknown_command': ('lattice.cli', ['bogus'], '',
                              ["unknown command 'bogus'"]),
  }


# Cases run as a real `python -m` subprocess: a one-device process (this one has 8
# CPU devices, tests/conftest.py), and one case of each entry point end to end.
SUBPROCESS = ('mesh_one_device', 'missing_config_flag', 'cli_run')


def _run(module, args, xla_flags, cwd=ROOT):
  env = dict(os.environ, XLA_FLAGS=f'{xla_flags} {XLA_TEST_FLAGS}', JAX_PLATFORMS='cpu')
  t0 = time.perf_counter()
  proc = subprocess.run([sys.executable, '-m', module, *args], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=120, check=False)
  return proc, time.perf_counter() - t0


def _run_here(module, args):
  """(CompletedProcess-like result, seconds) of the entry point run in this process:
  its exit status, stdout and stderr (an uncaught exception's traceback included)."""
  from lattice import cli, main  # pylint: disable=g-import-not-at-top
  entry = {'lattice.main': lambda a: main.cli(['lattice.main', *a]),
           'lattice.cli': cli.main}[module]
  out, err, code = io.StringIO(), io.StringIO(), 0
  t0 = time.perf_counter()
  cwd = os.getcwd()
  os.chdir(ROOT)  # relative paths (experiments/...) as from the repository root
  try:
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
      try:
        entry(list(args))
      except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
      except BaseException:  # pylint: disable=broad-except
        traceback.print_exc(file=err)
        code = 1
  finally:
    os.chdir(cwd)
  proc = subprocess.CompletedProcess([module, *args], code, out.getvalue(),
                                     err.getvalue())
  return proc, time.perf_counter() - t0


@pytest.fixture(scope='module')
def outcomes(tmp_path_factory):
  tmp = tmp_path_factory.mktemp('main')
  (tmp / 'weights.bin').write_bytes(bytes(range(256)) * 4)
  (tmp / 'empty').mkdir()
  (tmp / 'a_file').write_text('not a folder')
  (tmp / 'broken_exp.py').write_text(BROKEN_EXPERIMENT)
  cases = _cases(tmp)
  with concurrent.futures.ThreadPoolExecutor(max_workers=len(SUBPROCESS)) as pool:
    futures = {name: pool.submit(_run, *cases[name][:3]) for name in SUBPROCESS}
    # The in-process cases run one at a time (they redirect sys.stdout/stderr)
    # while the subprocesses start.
    done = {name: _run_here(*case[:2]) for name, case in cases.items()
            if name not in SUBPROCESS}
    done.update({name: f.result() for name, f in futures.items()})
  return {name: (cases[name], *done[name]) for name in cases}, tmp


CASE_NAMES = list(_cases(pathlib.Path('/tmp')))


@pytest.mark.parametrize('name', CASE_NAMES)
def test_bad_input_is_one_clear_line(outcomes, name):
  by_name, tmp = outcomes
  (_, _, _, expected), proc, seconds = by_name[name]
  lines = [l for l in proc.stderr.splitlines() if l.strip()]
  context = f'rc={proc.returncode} stderr:\n{proc.stderr}\nstdout:\n{proc.stdout}'
  assert proc.returncode == 2, context
  assert 'Traceback' not in proc.stderr, context
  assert 1 <= len(lines) < 5, context
  last = lines[-1]
  assert last.startswith('lattice: error: '), context
  for part in expected:
    assert part in last, f'{part!r} not in {last!r}'
  # Failed before training: no step ran, nothing was written, no compile waited on.
  assert 'train:' not in proc.stderr, context
  assert not (tmp / 'work' / 'result.json').exists()
  assert not list((tmp / 'work').glob('**/checkpoints/*'))
  assert seconds < 60, f'{name} took {seconds:.0f}s; it should fail at startup'


def test_report_cli_on_one_result(tmp_path):
  workdir = tmp_path / 'runs' / 'one'
  arm = records.Arm('baseline', {}, stats.aggregate([{'val_loss': 2.5}]), seeds=[0])
  records.Result(
      experiment='cli_probe', paper={'title': 'Probe paper', 'arxiv': '2401.00002'},
      claim='the CLI finds results', mode='smoke', arms=[arm],
      checks=[records.check('found', True, 'yes')],
      headline={'paper': 'n/a', 'ours': '2.5 loss'}).write(workdir)
  out = tmp_path / 'REPORT.md'
  proc, _ = _run_here('lattice.cli', ['report', str(tmp_path / 'runs'), '--out', str(out)])
  assert proc.returncode == 0, proc.stderr
  assert f'wrote {out}: 1 results, 1 reproduced' in proc.stdout
  md = out.read_text()
  assert 'cli_probe' in md and '2.5 loss' in md

  missing = tmp_path / 'nope'
  proc, _ = _run_here('lattice.cli', ['report', str(missing)])
  lines = [l for l in proc.stderr.splitlines() if l.strip()]
  assert proc.returncode != 0 and len(lines) == 1 and 'Traceback' not in proc.stderr
  assert str(missing) in lines[0]


def test_help_everywhere_and_config_listing():
  """`--help` exits 0 for every command and for `python -m lattice.main`; `lattice
  config` lists every key with its value and the field's meaning."""
  cases = {
      'run': ('lattice.cli', ['run', '--help'], 'usage: lattice run'),
      'main': ('lattice.main', ['--help'], 'usage: lattice run'),
      'main_with_config': ('lattice.main', [SMOKE, '--help'], '--workdir'),
      'bench': ('lattice.cli', ['bench', '--help'], 'train_throughput'),
      'sweep': ('lattice.cli', ['sweep', '--help'], '--grid'),
      'top': ('lattice.cli', ['--help'], 'sweep'),
      'config': ('lattice.cli', ['config', 'experiments/baseline_lm.py:quick'],
                 'model.d_model = 128\n'),
  }
  # `python -m lattice.main --help` as a real command line; the rest in process.
  with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
    main_help = pool.submit(_run, *cases['main'][:2], '')
    results = {k: _run_here(m, a) for k, (m, a, _) in cases.items() if k != 'main'}
    results['main'] = main_help.result()
  for name, (_, _, want) in cases.items():
    proc, _ = results[name]
    assert proc.returncode == 0, (name, proc.stderr)
    assert want in proc.stdout, (name, proc.stdout[-2000:])
  listing = results['config'][0].stdout
  assert "data.paths = ''  # files, folders or globs" in listing
  assert 'train.steps = 4400' in listing


def test_overrides_parse_by_type_and_scale_step_intervals():
  from lattice import config as config_lib
  from lattice import experiment
  from lattice.run import config_file
  _, config = config_file.load('experiments/baseline_lm.py:smoke')
  notes = config_file.apply(config, [('train.steps', '1200'), ('train.log_every', '7'),
                                     ('model.attention.rope_theta', '500'),
                                     ('train.progress', 'false')])
  assert config.train.steps == 1200 and config.train.log_every == 7  # given: kept
  assert config.optimizer.warmup_steps == 200 and config.checkpoint.every == 300
  assert config.model.attention.rope_theta == 500.0 and config.train.progress is False
  assert len(notes) == 1 and 'optimizer.warmup_steps 2 -> 200' in notes[0]
  assert 'train.log_every' not in notes[0]
  for path, text, want in (('model.d_modle', '3', "did you mean 'd_model'"),
                           ('train.steps', 'abc', 'expected an integer'),
                           ('model', '3', 'is a section'),
                           ('model.d_model.x', '3', 'holds a value')):
    with pytest.raises(config_lib.ConfigError, match=want):
      config_file.override(config, path, text)
  assert experiment.load_experiment_module('experiments/baseline_lm.py').NAME == (
      'baseline_lm')

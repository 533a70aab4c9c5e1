"""lm-eval adapter and `lattice eval`: the training eval's per-token loss; a local
lm_eval task runs."""

import json
import pathlib
import shutil
import textwrap

import jax
import numpy as np
import pytest

from lattice import cli, eval_cli
from lattice import config as config_lib
from lattice.data import batches
from lattice.eval import harness
from lattice.train import loop


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('run')
  # A separate eval corpus of short documents (several per packed row).
  evals = workdir.parent / 'eval.jsonl'
  evals.write_text(''.join(json.dumps({'text': f'doc {i}: ' + 'ab' * (i % 7)}) + '\n'
                           for i in range(60)))
  cfg = config_lib.build({
      'model': {'d_model': 32, 'n_layers': 1, 'max_len': 32, 'attention': {'n_heads': 2}},
      'data': {'seq_len': 32, 'batch_size': 8, 'eval_batches': 1,
               'eval': {'source': 'jsonl', 'paths': str(evals)}},
      'optimizer': {'lr': 3e-3, 'warmup_steps': 1},
      'train': {'steps': 2, 'log_every': 1, 'eval_every': 0, 'progress': False,
                'flops_peak': 1e9},
      'checkpoint': {'every': 2}})
  out = loop.train_and_evaluate(cfg, workdir, devices=jax.devices()[:1])
  return cfg, str(workdir), out.metrics


def _documents(batch):
  """Every document piece of a packed eval batch as its own row of ids (inputs of
  the segment + its last target) with the weights of its targets."""
  for inputs, targets, segments, weights in zip(batch['inputs'], batch['targets'],
                                                batch['segment_ids'], batch['weights']):
    for s in np.unique(segments[segments > 0]):
      idx = np.flatnonzero(segments == s)
      yield np.concatenate([inputs[idx], targets[idx[-1:]]]), weights[idx]


def test_lattice_eval_and_scorer_equal_training_eval(run, capsys):
  # The must-show of #16: `lattice eval` and the lm-eval adapter give the training
  # eval's per-token loss on the same text.
  cfg, workdir, trained = run
  cli.main(['eval', '--workdir', workdir])
  printed = capsys.readouterr().out
  assert 'val_loss=' in printed and 'val_bpb=' in printed
  written = json.loads((pathlib.Path(workdir) / eval_cli.EVAL_FILE).read_text())
  assert written['step'] == cfg.train.steps
  for key in ('val_loss', 'val_ppl', 'val_bpb'):
    np.testing.assert_allclose(written[key], trained[key], rtol=1e-5)

  # The adapter scores each document alone (attention never crosses documents in
  # the training eval either), from BOS at position 0.
  lm = harness.LatticeLM(workdir=workdir)
  setup = loop.build(loop.resolve(cfg), devices=jax.devices()[:1])
  batch = batches.make_eval_batches(setup.cfg, lm.tok)[0]
  docs = list(_documents(batch))
  assert len(docs) > 2 * len(batch['inputs'])  # rows hold several documents
  scored = lm.scorer.token_logprobs([ids for ids, _ in docs])
  nll = -sum(float((lp * w).sum()) for (lp, _), (_, w) in zip(scored, docs))
  np.testing.assert_allclose(nll / batch['weights'].sum(), trained['val_loss'], rtol=1e-5)


def test_lattice_eval_rows_land_in_the_experiment_record(run, tmp_path, capsys):
  # An experiment workdir (result.json + <arm>/seed_<k>): `lattice eval` adds one row
  # per run and eval set to result.json and table.md, and `lattice report` shows it.
  from lattice import report  # pylint: disable=g-import-not-at-top
  from lattice.run import records  # pylint: disable=g-import-not-at-top
  from report_test import write_result  # pylint: disable=g-import-not-at-top
  _, workdir, _ = run
  exp = tmp_path / 'exp'
  shutil.copytree(workdir, exp / 'base' / 'seed_0')
  before = write_result(exp, 'lm', passed=True).to_json()
  assert 'evals' not in before                       # old records stay as they were
  cli.main(['eval', '--workdir', str(exp)])
  assert 'added 1 eval rows to' in capsys.readouterr().out
  cli.main(['eval', '--workdir', str(exp / 'base' / 'seed_0')])  # one run: same row
  result = records.Result.load(exp)
  written = json.loads((exp / 'base' / 'seed_0' / eval_cli.EVAL_FILE).read_text())
  assert len(result.evals) == 1 and result.evals[0]['run'] == 'base/seed_0'
  for key in ('step', 'val_loss', 'val_ppl', 'val_bpb', 'eval'):
    assert result.evals[0][key] == written[key]
  assert {k: v for k, v in result.to_json().items() if k != 'evals'} == {
      k: v for k, v in before.items()}
  table = (exp / 'table.md').read_text()
  assert '## Evaluation (`lattice eval`)' in table
  assert '| base/seed_0 | 2 | `jsonl`' in table and f'{written["val_bpb"]:.4f}' in table
  assert '### Evaluation' in report.render(report.collect(exp), exp)


def test_lattice_eval_errors_are_one_line(tmp_path, capsys):
  with pytest.raises(SystemExit) as e:
    cli.main(['eval', '--workdir', str(tmp_path / 'nothing')])
  assert e.value.code == 2
  err = capsys.readouterr().err.strip()
  assert err.count('\n') == 0 and '--workdir' in err


def _multiple_choice_task(folder, name: str, rows: list[dict]) -> None:
  """A local lm_eval multiple-choice task `name` (rows of q, choices, label) in
  `folder`: its JSONL data and its YAML."""
  data = folder / f'{name}.jsonl'
  data.write_text(''.join(json.dumps(r) + '\n' for r in rows))
  (folder / f'{name}.yaml').write_text(textwrap.dedent(f"""\
      task: {name}
      dataset_path: json
      dataset_kwargs:
        data_files: {{test: {data}}}
      test_split: test
      output_type: multiple_choice
      doc_to_text: "{{{{q}}}}"
      doc_to_choice: "{{{{choices}}}}"
      doc_to_target: label
      metric_list:
        - metric: acc
      """))


def test_lm_eval_runs_a_local_task(run, tmp_path):
  lm_eval = pytest.importorskip('lm_eval')
  from lm_eval.tasks import TaskManager
  _, workdir, _ = run
  rows = [{'q': f'{a}+{b}=', 'choices': [str(a + b), str(a + b + 1)], 'label': 0}
          for a, b in [(1, 2), (3, 4), (2, 2), (5, 1)]]
  _multiple_choice_task(tmp_path, 'tiny_add', rows)
  out = lm_eval.simple_evaluate(
      model=harness.LatticeLM(workdir=workdir), tasks=['tiny_add'],
      task_manager=TaskManager(include_path=str(tmp_path)), bootstrap_iters=0)
  acc = out['results']['tiny_add']['acc,none']
  assert 0.0 <= acc <= 1.0
  # loglikelihood_rolling over text longer than max_len splits into windows and
  # scores every token once.
  text = 'abcdefgh' * 9
  class R:  # noqa: E306
    args = (text,)
  lm = harness.LatticeLM(workdir=workdir)
  rolled = lm.loglikelihood_rolling([R()])[0]
  assert np.isfinite(rolled) and rolled < 0


def test_lm_eval_record_adds_scores_to_the_experiment(run, tmp_path, capsys):
  """`lattice lm-eval ... --record` puts lm_eval's scores into result.json."""
  pytest.importorskip('lm_eval')
  from lattice.run import records  # pylint: disable=g-import-not-at-top
  from report_test import write_result  # pylint: disable=g-import-not-at-top
  _, workdir, _ = run
  exp = tmp_path / 'exp'
  shutil.copytree(workdir, exp / 'base' / 'seed_0')
  write_result(exp, 'lm', passed=True)
  (tmp_path / 'tasks').mkdir()
  _multiple_choice_task(tmp_path / 'tasks', 'tiny_inc', [
      {'q': f'{a}+1=', 'choices': [str(a + 1), '0'], 'label': 0} for a in range(3)])
  run_dir = str(exp / 'base' / 'seed_0')
  cli.main(['lm-eval', '--model_args', f'workdir={run_dir}', '--tasks', 'tiny_inc',
            '--include_path', str(tmp_path / 'tasks'), '--output_path',
            str(tmp_path / 'out'), '--record'])
  assert 'added to' in capsys.readouterr().out
  (row,) = records.Result.load(exp).evals
  assert row['run'] == 'base/seed_0' and row['step'] == 2
  assert row['eval'] == {'lm_eval': ['tiny_inc']}
  assert 0.0 <= row['lm_eval']['tiny_inc']['acc,none'] <= 1.0
  with pytest.raises(SystemExit):   # --record needs --output_path: one line, exit 2
    cli.main(['lm-eval', '--model_args', f'workdir={run_dir}', '--tasks', 'x',
              '--record'])

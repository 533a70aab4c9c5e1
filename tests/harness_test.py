"""lm-eval adapter: same per-token loss as the training eval; a local lm_eval task runs."""

import json
import textwrap

import jax
import numpy as np
import pytest

from lattice import config as config_lib
from lattice.data import pipeline
from lattice.eval import harness
from lattice.train import loop


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('run')
  cfg = config_lib.build({
      'model': {'d_model': 32, 'n_layers': 1, 'max_len': 32, 'attention': {'n_heads': 2}},
      'data': {'seq_len': 32, 'batch_size': 8, 'eval_batches': 1},
      'optimizer': {'lr': 3e-3, 'warmup_steps': 1},
      'train': {'steps': 2, 'log_every': 1, 'eval_every': 0, 'progress': False,
                'flops_peak': 1e9},
      'checkpoint': {'every': 2}})
  loop.train_and_evaluate(cfg, workdir, devices=jax.devices()[:1])
  return cfg, str(workdir)


def test_scorer_equals_training_eval(run):
  cfg, workdir = run
  lm = harness.LatticeLM(workdir=workdir)
  setup = loop.build(loop.resolve(cfg), devices=jax.devices()[:1])
  batch = pipeline.make_eval_batches(setup.cfg.data, lm.tok, 1)[0]
  sums = loop.eval_sums(setup, setup.abstract_state.replace(
      params=lm.gen.variables['params']), [batch])
  rows = [np.concatenate([i, t[-1:]]) for i, t in zip(batch['inputs'], batch['targets'])]
  scored = lm.scorer.token_logprobs(rows)
  w = batch['weights']
  nll = -sum(float((lp * wr).sum()) for (lp, _), wr in zip(scored, w))
  np.testing.assert_allclose(nll / w.sum(), sums['loss_sum'] / sums['weight'], rtol=1e-5)


def test_lm_eval_runs_a_local_task(run, tmp_path):
  lm_eval = pytest.importorskip('lm_eval')
  from lm_eval.tasks import TaskManager
  _, workdir = run
  data = tmp_path / 'qa.jsonl'
  rows = [{'q': f'{a}+{b}=', 'choices': [str(a + b), str(a + b + 1)], 'label': 0}
          for a, b in [(1, 2), (3, 4), (2, 2), (5, 1)]]
  data.write_text(''.join(json.dumps(r) + '\n' for r in rows))
  (tmp_path / 'tiny_add.yaml').write_text(textwrap.dedent(f"""\
      task: tiny_add
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

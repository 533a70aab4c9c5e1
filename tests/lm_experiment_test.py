"""experiments/lm.py on a user's own JSONL corpus, and its unigram baseline."""

import json
import math

import numpy as np

from lattice import config as config_lib
from lattice import experiment
from lattice.data import tokenizer as tokenizer_lib


def _corpus(path, n=40):
  rng = np.random.default_rng(0)
  words = ['alpha', 'beta', 'gamma', 'delta', 'the', 'a', 'of']
  with path.open('w') as f:
    for i in range(n):
      text = ' '.join(rng.choice(words, size=60)) + '.'
      f.write(json.dumps({'id': i, 'body': text}) + '\n')
  return path


def test_lm_trains_on_own_jsonl_and_reports_loss_ppl_bpb(tmp_path):
  module = experiment.load_experiment_module('experiments/lm.py')
  config = module.get_config('smoke')
  config.data.source = 'jsonl'
  config.data.paths = str(_corpus(tmp_path / 'mine.jsonl'))
  config.data.field = 'body'
  config.unigram_batches = 2
  result = module.run(config, str(tmp_path / 'run'))
  data = json.loads((tmp_path / 'run' / 'result.json').read_text())
  assert data['env']['data']['source'] == 'jsonl'
  (check,) = result.checks
  assert 'unigram' in check.name and 'val_bpb=' in check.detail
  m = result.arms[0].metrics
  assert math.isclose(m['val_ppl']['mean'], math.exp(m['val_loss']['mean']), rel_tol=1e-4)
  assert 'bits/byte' in data['headline']['ours'] and 'perplexity' in data['headline']['ours']


def test_unigram_baseline_matches_a_token_by_token_count(tmp_path):
  """The vectorized counts and scores equal a plain loop over the same batches."""
  module = experiment.load_experiment_module('experiments/lm.py')
  path = tmp_path / 'a.jsonl'
  path.write_text(''.join(json.dumps({'text': 'a' * 200}) + '\n' for _ in range(20)))
  cfg = config_lib.build({'data': {'source': 'jsonl', 'paths': str(path), 'seq_len': 16,
                                   'batch_size': 4, 'eval_batches': 2}})
  tok = tokenizer_lib.ByteTokenizer()
  uni = module.unigram_baseline(cfg.data, tok, n_train_batches=3, seed=0)
  # Brute force on the same batches: counts of the train targets, +1 per id.
  from lattice.data import pipeline  # pylint: disable=g-import-not-at-top
  it = pipeline.make_train_iterator(cfg.data, tok, seed=0)
  counts = np.ones(len(tokenizer_lib.byte_lengths(tok)))
  for _ in range(3):
    b = next(it)
    for t, w in zip(b['targets'].ravel(), b['weights'].ravel()):
      counts[t] += w > 0
  p = counts / counts.sum()
  nats = tok_n = n_bytes = 0.0
  for b in pipeline.make_eval_batches(cfg.data, tok, 2):
    for t, w, nb in zip(b['targets'].ravel(), b['weights'].ravel(),
                        b['target_bytes'].ravel()):
      if w > 0:
        nats -= math.log(p[t])
        tok_n += 1
        n_bytes += float(nb)
  assert math.isclose(uni['nats_per_token'], nats / tok_n, rel_tol=1e-9)
  assert math.isclose(uni['bpb'], nats / math.log(2) / n_bytes, rel_tol=1e-9)

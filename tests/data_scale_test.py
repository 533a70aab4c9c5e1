"""Data at scale: Parquet, pre-tokenized files, HF streaming, mixtures, eval sets."""

import dataclasses
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lattice import config as config_lib
from lattice.data import mixture
from lattice.data import pipeline
from lattice.data import sources
from lattice.data import token_files
from lattice.data import tokenizer as tokenizer_lib

TOK = tokenizer_lib.ByteTokenizer()


def _cfg(**kw):
  return dataclasses.replace(config_lib.DataConfig(), **kw)


def _it(cfg, seed=0):
  return pipeline.make_train_iterator(cfg, TOK, seed=seed, process_count=1, process_index=0)


def _take(it, n):
  return [next(it) for _ in range(n)]


def _same(a, b):
  return all(np.array_equal(x[k], y[k]) for x, y in zip(a, b) for k in x)


@pytest.fixture(scope='module')
def parquet_dir(tmp_path_factory):
  folder = tmp_path_factory.mktemp('pq')
  for f in range(2):
    texts = [f'<pq{f}-{i:03d}>' * 5 for i in range(30)]
    pq.write_table(pa.table({'text': texts, 'n': list(range(30))}),
                   folder / f'part{f}.parquet', row_group_size=7)
  return str(folder)


def test_parquet_rows_and_tail_split(parquet_dir):
  cfg = _cfg(source='parquet', paths=parquet_dir, val_fraction=0.1)
  train, val = sources.get_source(cfg, 'train'), sources.get_source(cfg, 'validation')
  assert len(train) == 54 and len(val) == 6
  assert train[0] == b'<pq0-000>' * 5 and val[5] == b'<pq1-029>' * 5
  assert train[40] == b'<pq1-010>' * 5     # across files and row groups
  batch = next(_it(cfg))
  assert batch['inputs'].shape == (16, 128)


def test_parquet_errors_name_the_field(parquet_dir, tmp_path):
  with pytest.raises(sources.DataError, match="data.field: 'body'"):
    sources.get_source(_cfg(source='parquet', paths=parquet_dir, field='body'), 'train')
  bad = tmp_path / 'x.parquet'
  bad.write_bytes(b'not parquet')
  with pytest.raises(sources.DataError, match='cannot read .* as Parquet'):
    sources.get_source(_cfg(source='parquet', paths=str(bad)), 'train')


@pytest.fixture(scope='module')
def token_file(tmp_path_factory):
  docs = [f'document {i} '.encode() * (3 + i % 5) for i in range(60)]
  path = str(tmp_path_factory.mktemp('tok') / 'corpus.bin')
  n = token_files.write_tokens(docs, TOK, path)
  assert n == sum(len(d) + 2 for d in docs)
  return path, docs


def test_token_files_windows_segments_and_resume(token_file):
  path, docs = token_file
  windows = token_files.TokenWindows([path], 17)
  flat = np.fromfile(path, dtype='<u2')
  np.testing.assert_array_equal(windows[3], flat[48:65])
  cfg = _cfg(source='tokens', paths=path, seq_len=16, batch_size=4, val_fraction=0.05)
  batch = next(_it(cfg))
  # Positions restart after each EOS, and targets across a boundary carry no loss.
  after_eos = batch['inputs'][:, :-1] == TOK.eos_id
  assert (batch['positions'][:, 1:][after_eos] == 0).all()
  assert (batch['weights'][batch['targets'] == TOK.bos_id] == 0).all()
  it = _it(cfg, seed=5)
  _take(it, 3)
  state = it.get_state()
  want = _take(it, 3)
  again = _it(cfg, seed=5)
  again.set_state(state)
  assert _same(_take(again, 3), want)
  evals = pipeline.make_eval_batches(cfg, TOK, 2, process_count=1, process_index=0)
  assert len(evals) == 2 and evals[0]['inputs'].shape == (4, 16)


def test_npy_token_files(tmp_path):
  ids = np.arange(100, dtype=np.uint32) % 250
  np.save(tmp_path / 't.npy', ids)
  windows = token_files.TokenWindows([str(tmp_path / 't.npy')], 9)
  assert len(windows) == 99 // 8
  np.testing.assert_array_equal(windows[2], ids[16:25])


def _marked_folder(tmp_path, name, n):
  folder = tmp_path / name
  folder.mkdir()
  for i in range(n):
    (folder / f'{i}.txt').write_text(f'[{name}]' * 40)
  return str(folder)


def test_mixture_proportions_match_weights(tmp_path):
  a, b = _marked_folder(tmp_path, 'a', 20), _marked_folder(tmp_path, 'b', 20)
  cfg = _cfg(seq_len=32, batch_size=8, val_fraction=0.0, mixture=[
      {'source': 'text', 'paths': a, 'weight': 3.0},
      {'source': 'text', 'paths': b, 'weight': 1.0}])
  rows = np.concatenate([x['inputs'] for x in _take(_it(cfg), 50)])   # 400 windows
  text = [TOK.decode(r) for r in rows]
  share_a = np.mean(['[a]' in t and '[b]' not in t for t in text])
  # Binomial sampling error of a 0.75 share over 400 windows: sd ~0.022.
  assert abs(share_a - 0.75) < 4 * np.sqrt(0.75 * 0.25 / len(rows)), share_a
  it = _it(cfg, seed=1)
  _take(it, 4)
  state, want = it.get_state(), None
  want = _take(it, 4)
  again = _it(cfg, seed=1)
  again.set_state(state)
  assert _same(_take(again, 4), want)


def test_mixture_and_eval_errors_name_the_field(tmp_path):
  a = _marked_folder(tmp_path, 'a', 3)
  with pytest.raises(config_lib.ConfigError, match=r'data.mixture\[1\].weight'):
    mixture.components(_cfg(mixture=[{'paths': a}, {'paths': a, 'weight': -1}]))
  with pytest.raises(config_lib.ConfigError, match=r'data.mixture\[0\].pahts'):
    mixture.components(_cfg(mixture=[{'pahts': a}]))
  with pytest.raises(config_lib.ConfigError, match='data.eval.weight'):
    mixture.eval_config(_cfg(eval={'paths': a, 'weight': 2}))


def test_separate_eval_set(tmp_path):
  a, b = _marked_folder(tmp_path, 'a', 6), _marked_folder(tmp_path, 'b', 3)
  cfg = _cfg(source='text', paths=a, seq_len=32, batch_size=2,
             eval={'source': 'text', 'paths': b})
  evals = pipeline.make_eval_batches(cfg, TOK, 4, process_count=1, process_index=0)
  text = ''.join(TOK.decode(x) for e in evals for x in e['inputs'])
  assert '[b]' in text and '[a]' not in text


def test_hf_streaming_local_files_and_resume(tmp_path):
  pytest.importorskip('datasets')
  for k in range(2):
    with open(tmp_path / f'p{k}.jsonl', 'w') as f:
      for i in range(40):
        f.write(json.dumps({'text': f'<s{k}-{i:02d}>' * 6}) + '\n')
  cfg = _cfg(source='hf', hf_name='json', hf_streaming=True, seq_len=32, batch_size=4,
             hf_data_files=f'{tmp_path}/p0.jsonl,{tmp_path}/p1.jsonl')
  it = _it(cfg, seed=2)
  _take(it, 3)
  state = it.get_state()
  want = _take(it, 5)
  again = _it(cfg, seed=2)
  again.set_state(state)
  assert _same(_take(again, 5), want)
  assert '<s' in TOK.decode(want[0]['inputs'][0])

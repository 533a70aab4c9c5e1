"""Several processes share a multi-file corpus by file (`sources.get_shard`).

Two processes are simulated in one test process with the pipeline's
`process_index`/`process_count` arguments. Bytes read are counted by the kernel
(/proc/self/io `rchar`), as in data_startup_test.py; each process starts from a cold
index cache of its own (another host that does not share the cache folder).
"""

import dataclasses
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lattice import config as config_lib
from lattice.data import pipeline
from lattice.data import sources
from lattice.data import tokenizer as tokenizer_lib

TOK = tokenizer_lib.ByteTokenizer()


def _cfg(**kw):
  return dataclasses.replace(config_lib.DataConfig(), **kw)


def _rchar() -> int:
  with open('/proc/self/io') as f:
    return next(int(l.split()[1]) for l in f if l.startswith('rchar'))


def _jsonl_corpus(folder, n_files=4, n_lines=300):
  """n_files JSONL files of distinct documents; returns every document."""
  folder.mkdir()
  docs = []
  for f in range(n_files):
    lines = [f'file {f} line {i:04d} ' + 'x' * (200 + i % 7) for i in range(n_lines)]
    (folder / f'p{f}.jsonl').write_text(
        ''.join(json.dumps({'text': t}) + '\n' for t in lines))
    docs += [t.encode() for t in lines]
  return docs


def _all(ds) -> list[bytes]:
  return [ds[i] for i in range(len(ds))]


@pytest.fixture(autouse=True)
def fresh_cache(tmp_path, monkeypatch):
  monkeypatch.setenv('LATTICE_DATA_CACHE', str(tmp_path / 'cache0'))
  sources._scan_jsonl.cache_clear()  # pylint: disable=protected-access


@pytest.mark.skipif(not os.path.exists('/proc/self/io'), reason='needs Linux /proc')
def test_each_process_reads_only_its_own_files_at_startup(tmp_path, monkeypatch):
  folder = tmp_path / 'c'
  _jsonl_corpus(folder)
  cfg = _cfg(source='jsonl', paths=str(folder), val_fraction=0.05)
  files = sorted(folder.iterdir())
  total = sum(p.stat().st_size for p in files)
  warm = _cfg(source='jsonl', paths=str(files[0]))
  sources.get_source(warm, 'train')  # imports and first calls, outside the count
  for p in range(2):
    monkeypatch.setenv('LATTICE_DATA_CACHE', str(tmp_path / f'cache-host{p}'))
    sources._scan_jsonl.cache_clear()  # pylint: disable=protected-access
    own = sum(f.stat().st_size for f in files[p::2])
    before = _rchar()
    for split in sources.SPLITS:
      len(sources.get_shard(cfg, split, p, 2))
    read = _rchar() - before
    # One newline scan of its own files (+ the eager check of their first lines);
    # the other process's files (half the corpus) are never read.
    assert own <= read < 1.3 * own < 0.7 * total, (p, read, own, total)
  # Document sharding (the one-process path) scans every file on a cold cache.
  monkeypatch.setenv('LATTICE_DATA_CACHE', str(tmp_path / 'cache-whole'))
  sources._scan_jsonl.cache_clear()  # pylint: disable=protected-access
  before = _rchar()
  len(sources.get_source(cfg, 'train'))
  assert _rchar() - before >= total


def test_processes_documents_are_disjoint_complete_and_deterministic(tmp_path):
  docs = _jsonl_corpus(tmp_path / 'c')
  cfg = _cfg(source='jsonl', paths=str(tmp_path / 'c'), val_fraction=0.1)
  shards = {(p, s): _all(sources.get_shard(cfg, s, p, 2))
            for p in range(2) for s in sources.SPLITS}
  parts = [set(v) for v in shards.values()]
  assert sum(map(len, parts)) == len(docs) == len(set().union(*parts))  # disjoint
  assert set().union(*parts) == set(docs)                                # complete
  for p in range(2):   # process p holds exactly files p and p + 2
    assert {d.split()[1] for s in sources.SPLITS for d in shards[p, s]} == {
        str(p).encode(), str(p + 2).encode()}
  n_val = len(shards[0, 'validation']) + len(shards[1, 'validation'])
  assert 0.05 * len(docs) < n_val < 0.15 * len(docs)   # hash split near 10%
  again = _all(sources.get_shard(cfg, 'validation', 1, 2))
  assert again == shards[1, 'validation']
  # One process (and a single file for two processes) keeps document sharding.
  assert sources.get_shard(cfg, 'train', 0, 1) is None
  one = _cfg(source='jsonl', paths=str(tmp_path / 'c' / 'p0.jsonl'))
  assert sources.get_shard(one, 'train', 0, 2) is None
  assert sources.get_shard(_cfg(source='stdlib'), 'train', 0, 2) is None


def test_text_and_parquet_shard_by_file(tmp_path):
  text = tmp_path / 't'
  text.mkdir()
  for i in range(6):
    (text / f'd{i}.txt').write_text(f'text doc {i}\n')
  got = [_all(sources.get_shard(_cfg(source='text', paths=str(text), val_fraction=0),
                                'train', p, 3)) for p in range(3)]
  assert got == [[b'text doc 0\n', b'text doc 3\n'], [b'text doc 1\n', b'text doc 4\n'],
                 [b'text doc 2\n', b'text doc 5\n']]
  par = tmp_path / 'q'
  par.mkdir()
  for f in range(2):
    pq.write_table(pa.table({'text': [f'pq {f} {i}' for i in range(10)]}),
                   par / f'{f}.parquet')
  cfg = _cfg(source='parquet', paths=str(par), val_fraction=0.2)
  assert _all(sources.get_shard(cfg, 'validation', 1, 2)) == [b'pq 1 8', b'pq 1 9']
  assert len(sources.get_shard(cfg, 'train', 0, 2)) == 8


def test_train_iterators_by_file_and_resume(tmp_path):
  folder = tmp_path / 'c'
  folder.mkdir()
  for i in range(6):   # one 8-byte document per file: a window of 9+1 tokens each
    (folder / f'{i:02d}.txt').write_text(f'<doc{i:03d}>')
  cfg = _cfg(source='text', paths=str(folder), val_fraction=0, seq_len=9,
             batch_size=2)
  seen = []
  for p in range(2):
    it = pipeline.make_train_iterator(cfg, TOK, seed=0, process_index=p,
                                      process_count=2)
    batches = [next(it) for _ in range(3)]   # one epoch of this process's files
    seen.append({TOK.decode(b['inputs'][0]) for b in batches})
    state = it.get_state()
    want = [next(it) for _ in range(4)]
    fresh = pipeline.make_train_iterator(cfg, TOK, seed=0, process_index=p,
                                         process_count=2)
    fresh.set_state(json.loads(json.dumps(state)))
    for a, b in zip(want, [next(fresh) for _ in range(4)]):
      for key in a:
        np.testing.assert_array_equal(a[key], b[key])
  assert seen == [{'<doc000>', '<doc002>', '<doc004>'},
                  {'<doc001>', '<doc003>', '<doc005>'}]


def test_eval_is_a_fixed_number_of_padded_batches_per_process(tmp_path):
  folder = tmp_path / 'c'
  _jsonl_corpus(folder, n_files=3, n_lines=40)   # process 0: 2 files, process 1: 1
  cfg = _cfg(source='jsonl', paths=str(folder), val_fraction=0.3, seq_len=64,
             batch_size=4)
  shards = [pipeline.make_eval_batches(cfg, TOK, 6, process_index=p, process_count=2)
            for p in range(2)]
  assert len(shards[0]) == len(shards[1]) == 6
  assert all(b['inputs'].shape == (2, 64) for s in shards for b in s)
  weights = [sum(float(b['weights'].sum()) for b in s) for s in shards]
  assert all(w > 0 for w in weights)
  small = [pipeline.make_eval_batches(cfg, TOK, 100, process_index=p, process_count=2)
           for p in range(2)]
  assert len(small[0]) == len(small[1]) == 100   # both pad to the same count
  last = small[1][-1]
  assert not last['weights'].any() and (last['targets'] == TOK.pad_id).all()
  # This process's validation tokens are weighted, once each: every target but
  # the first token of each window and of each document.
  val = _all(sources.get_shard(cfg, 'validation', 1, 2))
  tokens = sum(len(d) + 2 for d in val)
  windows = -(-tokens // 65)
  weighted = sum(float(b['weights'].sum()) for b in small[1])
  assert tokens - windows - len(val) <= weighted <= tokens - windows
  with pytest.raises(config_lib.ConfigError, match='data.val_fraction'):
    pipeline.make_eval_batches(dataclasses.replace(cfg, val_fraction=0), TOK, 2,
                               process_index=0, process_count=2)

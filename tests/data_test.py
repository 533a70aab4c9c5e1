"""Tests for lattice.data: tokenizer, sources, pipelines."""

import collections
import dataclasses
import hashlib
import json
import os
import sysconfig

import numpy as np
import pytest

from lattice import config as config_lib
from lattice.data import batches
from lattice.data import pipeline
from lattice.data import sources
from lattice.data import tokenizer as tokenizer_lib

TOK = tokenizer_lib.ByteTokenizer()


def _cfg(**kw):
  return dataclasses.replace(config_lib.DataConfig(), **kw)


def _docs(ds):
  return [ds[i] for i in range(len(ds))]


def _write_docs(folder, n, size=40):
  """n text files, each holding a unique marker `<docNNN>` repeated."""
  os.makedirs(folder, exist_ok=True)
  for i in range(n):
    with open(os.path.join(folder, f'd{i:03d}.txt'), 'w') as f:
      f.write(f'<doc{i:03d}>' * size)
  return str(folder)


# ---------------------------------------------------------------------- tokenizer


def test_tokenizer_round_trip_and_specials():
  text = 'héllo wörld ✓ 日本 🚀'
  ids = TOK.encode(text, bos=True, eos=True)
  assert ids.dtype == np.int32
  assert ids[0] == tokenizer_lib.BOS_ID and ids[-1] == tokenizer_lib.EOS_ID
  assert len(ids) == len(text.encode()) + 2
  assert TOK.decode(ids) == text
  assert TOK.decode_bytes(ids) == text.encode()
  assert TOK.encode(text.encode()).tolist() == list(text.encode())
  kept = TOK.decode([tokenizer_lib.BOS_ID, 104, 105, tokenizer_lib.IMG_ID, 300],
                    skip_special=False)
  assert kept == '<bos>hi<img><unk_300>'
  assert TOK.decode([0xE6, 0x97, tokenizer_lib.PAD_ID]) == '\ufffd'  # Cut UTF-8.


def test_vocab_size():
  assert TOK.vocab_size == 272
  assert (tokenizer_lib.PAD_ID, tokenizer_lib.BOS_ID, tokenizer_lib.EOS_ID,
          tokenizer_lib.BOI_ID, tokenizer_lib.EOI_ID, tokenizer_lib.IMG_ID) == (
              256, 257, 258, 259, 260, 261)
  assert tokenizer_lib.RESERVED_IDS[-1] == 271
  assert tokenizer_lib.padded_vocab_size(TOK) == 384
  assert tokenizer_lib.padded_vocab_size(TOK, 16) == 272


# ------------------------------------------------------------------------ sources


def test_stdlib_source_disjoint_splits():
  train = sources.get_source(_cfg(source='stdlib', val_fraction=0.05), 'train')
  val = sources.get_source(_cfg(source='stdlib', val_fraction=0.05), 'validation')
  info = sources.stdlib_info()
  assert len(train) + len(val) == info['n_files'] > 100
  assert 0 < len(val) < len(train)
  assert len(info['content_sha256']) == 64 and info['n_bytes'] > 1_000_000
  assert isinstance(train[0], bytes)
  # Disjoint and complete: the splits together hold each stdlib file exactly once
  # (as multisets: some files, like empty __init__.py, share their contents).
  root = sysconfig.get_paths()['stdlib']
  corpus = collections.Counter()
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = [d for d in dirnames if d not in ('site-packages', '__pycache__')
                   and not d.startswith('.')]
    for f in filenames:
      if f.endswith('.py') and not f.startswith('.'):
        with open(os.path.join(dirpath, f), 'rb') as fh:
          corpus[hashlib.md5(fh.read()).digest()] += 1
  split_docs = collections.Counter(
      hashlib.md5(d).digest() for d in _docs(train) + _docs(val))
  assert split_docs == corpus


def test_text_file_folder_glob(tmp_path):
  folder = _write_docs(tmp_path / 'corpus' / 'sub', 6)
  (tmp_path / 'corpus' / '.hidden').write_text('never')
  single = tmp_path / 'one.txt'
  single.write_text('just one document\n')
  by_folder = sources.get_source(
      _cfg(source='text', paths=str(tmp_path / 'corpus'), val_fraction=0), 'train')
  assert len(by_folder) == 6 and by_folder[0].startswith(b'<doc000>')
  by_glob = sources.get_source(
      _cfg(source='text', paths=f'{folder}/d00[0-2].txt', val_fraction=0), 'train')
  assert len(by_glob) == 3
  both = sources.get_source(
      _cfg(source='text', paths=f'{single}, {folder}/*.txt', val_fraction=0), 'train')
  assert len(both) == 7 and both[0] == b'just one document\n'


def test_small_corpus_keeps_both_splits(tmp_path):
  folder = _write_docs(tmp_path / 'c', 3)
  cfg = _cfg(source='text', paths=folder, val_fraction=0.01)
  train, val = (_docs(sources.get_source(cfg, s)) for s in sources.SPLITS)
  assert len(val) >= 1 and len(train) >= 1 and len(train) + len(val) == 3
  assert not set(train) & set(val)
  # A single file is split by bytes instead.
  one = tmp_path / 'one.txt'
  one.write_text('abcdefghij' * 10)
  cfg = _cfg(source='text', paths=str(one), val_fraction=0.1)
  train, val = (_docs(sources.get_source(cfg, s)) for s in sources.SPLITS)
  assert train[0] + val[0] == one.read_bytes() and len(val[0]) == 10
  cfg = _cfg(source='text', paths=str(one), val_fraction=0)
  assert len(sources.get_source(cfg, 'validation')) == 0


def test_jsonl(tmp_path):
  path = tmp_path / 'a.jsonl'
  path.write_text('\n'.join(json.dumps({'body': f'row {i} é', 'n': i}) for i in range(5))
                  + '\n\n')
  cfg = _cfg(source='jsonl', paths=str(path), field='body', val_fraction=0)
  docs = _docs(sources.get_source(cfg, 'train'))
  assert docs == [f'row {i} é'.encode() for i in range(5)]


def test_arrayrecord_text_and_json(tmp_path):
  array_record_module = pytest.importorskip('array_record.python.array_record_module')
  def write(name, records):
    path = str(tmp_path / name)
    writer = array_record_module.ArrayRecordWriter(path, 'group_size:1')
    for r in records:
      writer.write(r)
    writer.close()
    return path
  text = write('t.array_record', [f'text {i}'.encode() for i in range(4)])
  docs = _docs(sources.get_source(
      _cfg(source='arrayrecord', paths=text, val_fraction=0), 'train'))
  assert docs == [f'text {i}'.encode() for i in range(4)]
  js = write('j.array_record', [json.dumps({'text': f'j{i}'}).encode() for i in range(3)])
  docs = _docs(sources.get_source(
      _cfg(source='arrayrecord', paths=js, val_fraction=0), 'train'))
  assert docs == [b'j0', b'j1', b'j2']
  with pytest.raises(sources.DataError, match=r"data\.field: 'body'"):
    sources.get_source(_cfg(source='arrayrecord', paths=js, field='body'), 'train')
  binary = write('b.array_record', [b'a\0b'])
  with pytest.raises(sources.DataError, match='NUL'):
    sources.get_source(_cfg(source='arrayrecord', paths=binary), 'train')


def test_hf_if_installed():
  pytest.importorskip('datasets')
  with pytest.raises(sources.DataError, match='data.hf_name'):
    sources.get_source(_cfg(source='hf', hf_name='/nonexistent/lattice-test'), 'train')


@pytest.mark.parametrize('kind', ['missing', 'glob', 'empty_folder', 'binary',
                                  'bad_json', 'no_field', 'unreadable', 'no_paths'])
def test_bad_inputs_raise_clear_errors(tmp_path, kind):
  source, field = 'text', 'text'
  if kind == 'missing':
    paths, want = str(tmp_path / 'nope.txt'), r'data\.paths: .*nope\.txt.* does not exist'
  elif kind == 'glob':
    paths, want = str(tmp_path / '*.zzz'), r'data\.paths: glob .*\*\.zzz.* matches no'
  elif kind == 'empty_folder':
    (tmp_path / 'empty').mkdir()
    paths, want = str(tmp_path / 'empty'), r'data\.paths: folder .*empty.* no data'
  elif kind == 'binary':
    (tmp_path / 'ok.txt').write_text('fine')
    (tmp_path / 'img.bin').write_bytes(b'\x89PNG\0\0\x01')
    paths, want = str(tmp_path), r'data\.paths: .*img\.bin.* NUL'
  elif kind == 'bad_json':
    (tmp_path / 'x.jsonl').write_text('{"text": "a"}\n{"text": oops}\n')
    source, paths, want = 'jsonl', str(tmp_path / 'x.jsonl'), r'x\.jsonl:2'
  elif kind == 'no_field':
    (tmp_path / 'x.jsonl').write_text('{"text": "a"}\n{"body": "b"}\n')
    source, field, paths = 'jsonl', 'text', str(tmp_path / 'x.jsonl')
    want = r"data\.field: 'text' missing at .*x\.jsonl:2"
  elif kind == 'unreadable':
    if os.geteuid() == 0:
      pytest.skip('root reads every file')
    (tmp_path / 'locked.txt').write_text('secret')
    os.chmod(tmp_path / 'locked.txt', 0)
    paths, want = str(tmp_path / 'locked.txt'), r'data\.paths: cannot read .*locked'
  else:
    paths, want = ' , ', r'data\.paths: empty'
  with pytest.raises(config_lib.ConfigError, match=want):
    sources.get_source(_cfg(source=source, paths=paths, field=field), 'train')


def test_source_tables_match_the_config_choices():
  assert set(config_lib.DATA_SOURCES) == (set(sources.SOURCES) | set(batches.BATCH_SOURCES)
                                          | set(sources.WINDOW_SOURCES))
  assert not set(sources.SOURCES) & set(batches.BATCH_SOURCES)
  assert set(sources.TEXT_OF_BATCH_SOURCE) == set(batches.BATCH_SOURCES)
  cfg = config_lib.build({'data': {'source': 'moa_arith'}})
  assert len(sources.get_source(cfg.data, 'validation')) > 0
  with pytest.raises(config_lib.ConfigError, match='^data.source: '):
    config_lib.build({'data': {'source': 'no_such_source'}})


# ----------------------------------------------------------------------- pipeline


def _take(it, n):
  return [next(it) for _ in range(n)]


def _equal(a, b):
  return all(np.array_equal(x[k], y[k]) for x, y in zip(a, b) for k in x)


def test_train_batches_shapes_and_shift():
  cfg = _cfg(seq_len=64, batch_size=8)
  it = pipeline.make_train_iterator(cfg, TOK, seed=0, process_count=1, process_index=0)
  batch = next(it)
  assert {k: (v.shape, v.dtype) for k, v in batch.items()} == {
      'inputs': ((8, 64), np.int32), 'targets': ((8, 64), np.int32),
      'weights': ((8, 64), np.float32), 'segment_ids': ((8, 64), np.int32),
      'positions': ((8, 64), np.int32), 'target_bytes': ((8, 64), np.float32)}
  # Byte tokenizer: every byte target writes one byte, specials none.
  np.testing.assert_array_equal(batch['target_bytes'], batch['targets'] < 256)
  np.testing.assert_array_equal(batch['inputs'][:, 1:], batch['targets'][:, :-1])
  # Packed training windows hold no padding; the only targets without loss are
  # the first tokens of a document (BOS), predicted across a boundary.
  assert (batch['segment_ids'] > 0).all()
  np.testing.assert_array_equal(batch['weights'] == 0,
                                batch['targets'] == tokenizer_lib.BOS_ID)
  assert (batch['inputs'] == tokenizer_lib.BOS_ID).any()
  starts = batch['inputs'] == tokenizer_lib.BOS_ID
  assert (batch['positions'][starts] == 0).all()
  np.testing.assert_array_equal(np.diff(batch['segment_ids'], axis=1) == 1,
                                starts[:, 1:])


def test_train_windows_are_consecutive_slices_of_documents(tmp_path):
  folder = _write_docs(tmp_path / 'c', 4, size=3)
  cfg = _cfg(source='text', paths=folder, val_fraction=0, seq_len=16, batch_size=2)
  it = pipeline.make_train_iterator(cfg, TOK, seed=3, process_count=1, process_index=0)
  stream = np.concatenate([np.concatenate([b['inputs'], b['targets'][:, -1:]], 1)
                           for b in _take(it, 8)]).reshape(-1)
  first_epoch = TOK.decode(stream[:4 * (3 * 8 + 2)], skip_special=False)
  docs = first_epoch.replace('<eos>', '').split('<bos>')[1:]
  assert sorted(docs) == [f'<doc{i:03d}>' * 3 for i in range(4)]


def test_train_determinism_and_epoch_reshuffle(tmp_path):
  folder = _write_docs(tmp_path / 'c', 8, size=2)
  cfg = _cfg(source='text', paths=folder, val_fraction=0, seq_len=17, batch_size=1)
  make = lambda seed: pipeline.make_train_iterator(  # pylint: disable=g-long-lambda
      cfg, TOK, seed=seed, process_count=1, process_index=0)
  a, b, c = _take(make(0), 5), _take(make(0), 5), _take(make(1), 5)
  assert _equal(a, b)
  assert not _equal(a, c)
  # Each 17+1-token window is one whole document (BOS + 16 bytes + EOS), so the
  # first 16 windows are two epochs of the 8 documents, in two different orders.
  order = [TOK.decode(x['inputs'][0])[:8] for x in _take(make(0), 16)]
  assert sorted(order[:8]) == sorted(order[8:]) and order[:8] != order[8:]


def test_get_state_set_state_on_fresh_iterator():
  cfg = _cfg(seq_len=32, batch_size=4)
  it = pipeline.make_train_iterator(cfg, TOK, seed=0, process_count=1, process_index=0)
  _take(it, 7)
  state = it.get_state()
  json.dumps(state)  # Orbax stores it as JSON.
  expected = _take(it, 3)
  fresh = pipeline.make_train_iterator(cfg, TOK, seed=0, process_count=1,
                                       process_index=0)
  fresh.set_state(state)
  assert _equal(_take(fresh, 3), expected)


def test_process_sharding_disjoint_and_complete(tmp_path):
  folder = _write_docs(tmp_path / 'c', 10, size=1)
  # Windows of 9+1 tokens are exactly one document (BOS + 8 bytes + EOS).
  cfg = _cfg(source='text', paths=folder, val_fraction=0, seq_len=9, batch_size=2)
  seen = []
  for p in range(2):
    it = pipeline.make_train_iterator(cfg, TOK, seed=0, process_index=p,
                                      process_count=2)
    batches = _take(it, 5)  # 5 batches of 1 row: one epoch of this process's docs.
    assert batches[0]['inputs'].shape == (1, 9)
    seen.append({TOK.decode(b['inputs'][0]) for b in batches})
  assert not seen[0] & seen[1]
  assert seen[0] | seen[1] == {f'<doc{i:03d}>' for i in range(10)}
  with pytest.raises(config_lib.ConfigError, match='data.batch_size'):
    pipeline.make_train_iterator(_cfg(batch_size=3), TOK, seed=0, process_index=0,
                                 process_count=2)


def test_eval_batches_fixed_padded_and_equal_across_processes(tmp_path):
  folder = _write_docs(tmp_path / 'c', 5, size=10)  # 5 docs x 82 tokens.
  cfg = _cfg(source='text', paths=folder, val_fraction=0.5, seq_len=32, batch_size=4)
  a = pipeline.make_eval_batches(cfg, TOK, 100, process_index=0, process_count=1)
  b = pipeline.make_eval_batches(cfg, TOK, 100, process_index=0, process_count=1)
  assert _equal(a, b) and 1 <= len(a) < 100
  val_docs = len(sources.get_source(cfg, 'validation'))
  assert a[0]['inputs'].shape == (4, 32)
  assert a[0]['inputs'][0, 0] == tokenizer_lib.BOS_ID
  # Exactly the validation tokens are weighted: one target per token but the first.
  total_weight = sum(x['weights'].sum() for x in a)
  windows = -(-val_docs * 82 // 33)
  assert total_weight == val_docs * 82 - windows
  pads = np.concatenate([x['targets'][x['weights'] == 0] for x in a])
  assert (pads == tokenizer_lib.PAD_ID).all()
  assert len(pipeline.make_eval_batches(cfg, TOK, 1, process_index=0,
                                        process_count=1)) == 1
  shards = [pipeline.make_eval_batches(cfg, TOK, 100, process_index=p,
                                       process_count=2) for p in range(2)]
  assert len(shards[0]) == len(shards[1]) >= 1
  assert all(x['inputs'].shape == (2, 32) for s in shards for x in s)
  assert sum(x['weights'].sum() for s in shards for x in s) > 0
  with pytest.raises(config_lib.ConfigError, match='data.val_fraction'):
    pipeline.make_eval_batches(dataclasses.replace(cfg, val_fraction=0), TOK, 2,
                               process_index=0, process_count=1)


def test_train_with_grain_workers_matches_in_process(tmp_path):
  folder = _write_docs(tmp_path / 'c', 6, size=4)
  cfg = _cfg(source='text', paths=folder, val_fraction=0, seq_len=16, batch_size=2,
             num_workers=1)
  it = pipeline.make_train_iterator(cfg, TOK, seed=0, process_count=1, process_index=0)
  with_workers = _take(it, 4)
  state = it.get_state()
  in_process = pipeline.make_train_iterator(
      dataclasses.replace(cfg, num_workers=0), TOK, seed=0, process_count=1,
      process_index=0)
  assert _equal(with_workers, _take(in_process, 4))
  assert state

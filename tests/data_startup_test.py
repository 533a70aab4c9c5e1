"""Opening a corpus reads metadata, not the corpus (lattice/data/index.py).

Bytes read are counted by the kernel (/proc/self/io `rchar`) around the open, after
imports; `sources._scan_jsonl.cache_clear()` stands for a fresh process or another
host sharing the index cache.
"""

import dataclasses
import io
import json
import os
import random

import pytest

from lattice import config as config_lib
from lattice.data import index
from lattice.data import sources


def _cfg(**kw):
  return dataclasses.replace(config_lib.DataConfig(), **kw)


@pytest.fixture(autouse=True)
def fresh_cache(tmp_path, monkeypatch):
  monkeypatch.setenv('LATTICE_DATA_CACHE', str(tmp_path / 'cache'))
  sources._scan_jsonl.cache_clear()  # pylint: disable=protected-access


def _rchar() -> int:
  with open('/proc/self/io') as f:
    return next(int(l.split()[1]) for l in f if l.startswith('rchar'))


def _bytes_to_open(cfg) -> int:
  sources._scan_jsonl.cache_clear()  # pylint: disable=protected-access
  before = _rchar()
  for split in sources.SPLITS:
    len(sources.get_source(cfg, split))
  return _rchar() - before


def _size(folder) -> int:
  return sum(p.stat().st_size for p in folder.iterdir())


@pytest.mark.skipif(not os.path.exists('/proc/self/io'), reason='needs Linux /proc')
def test_startup_reads_a_jsonl_corpus_once_then_only_its_index(tmp_path):
  folder = tmp_path / 'jsonl'
  folder.mkdir()
  line = json.dumps({'text': 'y' * 480}) + '\n'
  for f in range(4):
    (folder / f'p{f}.jsonl').write_text(line * 1000)
  cfg = _cfg(source='jsonl', paths=str(folder), val_fraction=0.01)
  (tmp_path / 'warm.jsonl').write_text(line)
  _bytes_to_open(_cfg(source='jsonl', paths=str(tmp_path / 'warm.jsonl')))  # imports
  size = _size(folder)
  cold, warm = _bytes_to_open(cfg), _bytes_to_open(cfg)
  assert size <= cold < 1.5 * size      # one newline scan (before: a parse every start)
  assert warm < 0.15 * size             # the cached index + the eagerly checked lines
  docs = sources.get_source(cfg, 'train')
  assert docs[5] == b'y' * 480


@pytest.mark.skipif(not os.path.exists('/proc/self/io'), reason='needs Linux /proc')
def test_startup_reads_the_head_of_a_few_text_files(tmp_path):
  folder = tmp_path / 'text'
  folder.mkdir()
  for i in range(200):
    (folder / f'd{i:03d}.txt').write_text(f'doc {i:03d}\n' * 8000)
  cfg = _cfg(source='text', paths=str(folder))
  _bytes_to_open(cfg)  # warm imports
  # 8 KiB of each of the first 64 files, per split; before: every byte, every start
  assert _bytes_to_open(cfg) < 0.1 * _size(folder)


def test_errors_past_the_eager_check_raise_when_read(tmp_path):
  lines = [json.dumps({'text': f'ok {i}'}) for i in range(100)]
  lines[90] = '{"text": oops}'
  (tmp_path / 'x.jsonl').write_text('\n'.join(lines) + '\n')
  docs = sources.get_source(_cfg(source='jsonl', paths=str(tmp_path / 'x.jsonl'),
                                 val_fraction=0), 'train')
  assert len(docs) == 100 and docs[89] == b'ok 89'
  with pytest.raises(sources.DataError, match=r'malformed JSON line at .*x\.jsonl byte'):
    docs[90]  # pylint: disable=pointless-statement
  text = tmp_path / 'text'
  text.mkdir()
  for i in range(sources._EAGER_CHECK + 1):  # pylint: disable=protected-access
    (text / f'd{i:03d}.txt').write_bytes(b'a\0b' if i == sources._EAGER_CHECK else b'ab')  # pylint: disable=protected-access
  docs = sources.get_source(_cfg(source='text', paths=str(text), val_fraction=0), 'train')
  with pytest.raises(sources.DataError, match='NUL'):
    docs[sources._EAGER_CHECK]  # pylint: disable=pointless-statement,protected-access


def test_a_rewritten_file_is_indexed_again(tmp_path):
  path = tmp_path / 'x.jsonl'
  path.write_text('{"text": "a"}\n')
  cfg = _cfg(source='jsonl', paths=str(path), val_fraction=0)
  assert len(sources.get_source(cfg, 'train')) == 1
  path.write_text('{"text": "a"}\n\n  \n{"text": "b"}\n')
  sources._scan_jsonl.cache_clear()  # pylint: disable=protected-access
  docs = sources.get_source(cfg, 'train')
  assert [docs[0], docs[1]] == [b'a', b'b']


def test_scan_lines_matches_a_line_split_at_any_chunk_size(monkeypatch):
  rng = random.Random(0)
  for _ in range(300):
    data = b''.join(rng.choice([b'', b' ', b'\t \r', b'{"a":1}', b'x', b'  y  ']) +
                    rng.choice([b'\n', b'\r\n', b'\n\n', b''])
                    for _ in range(rng.randint(0, 12)))
    monkeypatch.setattr(index, '_CHUNK', rng.randint(1, 8))
    want, offset = [], 0
    for line in data.split(b'\n'):
      length = len(line) + (offset + len(line) < len(data))
      if line.strip():
        want.append([offset, length])
      offset += length
    assert index.scan_lines(io.BytesIO(data)).tolist() == want, data


def test_split_hashes_come_from_the_cache_and_match_the_rule():
  units = index.index_units(50)
  assert units.tolist() == [sources._hash_unit(str(i)) for i in range(50)]  # pylint: disable=protected-access
  assert index.index_units(20).tolist() == units[:20].tolist()
  assert (index.cache_dir() / 'index-units.npy').exists()

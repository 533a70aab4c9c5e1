"""Every data source and the SentencePiece tokenizer read from `gs://`, against a
local GCS emulator (127.0.0.1 only; see gcs_emulator.py).

One emulator for the module: the fixture uploads a small corpus per source kind to
the bucket, and each test builds the remote source and checks it gives the same
documents (or token windows) as the same files on local disk.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytest.importorskip('gcp_storage_emulator')
pytest.importorskip('gcsfs')

from etils import epath  # pylint: disable=g-import-not-at-top

from lattice import config as config_lib  # pylint: disable=g-import-not-at-top
from lattice.data import pipeline  # pylint: disable=g-import-not-at-top
from lattice.data import sources  # pylint: disable=g-import-not-at-top
from lattice.data import token_files  # pylint: disable=g-import-not-at-top
from lattice.data import tokenizer as tokenizer_lib  # pylint: disable=g-import-not-at-top
from lattice.data import tokenizer_train  # pylint: disable=g-import-not-at-top
import gcs_emulator  # pylint: disable=g-import-not-at-top  # tests/ is on sys.path

BUCKET = 'gs://lattice-test/data'
TOK = tokenizer_lib.ByteTokenizer()


def _cfg(**kw):
  return dataclasses.replace(config_lib.DataConfig(), **kw)


def _upload(local, remote: str) -> None:
  for p in sorted(local.rglob('*')):
    if p.is_file():
      dst = epath.Path(remote) / p.relative_to(local).as_posix()
      dst.parent.mkdir(parents=True, exist_ok=True)
      dst.write_bytes(p.read_bytes())


@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
  """(local folder, its gs:// copy) with one sub-folder per source kind."""
  root = tmp_path_factory.mktemp('remote_corpus')
  (root / 'text').mkdir()
  for i in range(6):
    (root / 'text' / f'doc{i}.txt').write_text(f'text document {i}\n' * (3 + i))
  (root / 'jsonl').mkdir()
  for f in range(2):
    with open(root / 'jsonl' / f'part{f}.jsonl', 'w') as fh:
      for i in range(7):
        fh.write(json.dumps({'text': f'json {f}-{i} ' * 4, 'id': i}) + '\n')
  (root / 'parquet').mkdir()
  pq.write_table(pa.table({'text': [f'<pq{i:02d}>' * 3 for i in range(20)]}),
                 root / 'parquet' / 'part.parquet', row_group_size=6)
  (root / 'tokens').mkdir()
  stream = np.arange(3000, dtype=np.uint16) % 250
  stream.tofile(root / 'tokens' / 'a.bin')
  np.save(root / 'tokens' / 'b.npy', (np.arange(2000) % 200).astype(np.int32))
  with gcs_emulator.running():
    _upload(root, BUCKET)
    yield root, BUCKET


def _docs(ds) -> list[bytes]:
  return [ds[i] for i in range(len(ds))]


@pytest.mark.parametrize('kind, paths, field', [
    ('text', 'text', 'text'),
    ('text', 'text/doc*.txt', 'text'),
    ('jsonl', 'jsonl', 'text'),
    ('parquet', 'parquet/part.parquet', 'text'),
])
def test_document_sources_read_the_same_from_a_bucket(corpus, kind, paths, field):
  local, remote = corpus
  for split in sources.SPLITS:
    here = sources.get_source(_cfg(source=kind, paths=str(local / paths), field=field,
                                   val_fraction=0.3), split)
    there = sources.get_source(_cfg(source=kind, paths=f'{remote}/{paths}', field=field,
                                    val_fraction=0.3), split)
    assert len(here) > 0 and _docs(here) == _docs(there)


@pytest.mark.parametrize('name', ['a.bin', 'b.npy'])
def test_token_files_read_the_same_from_a_bucket(corpus, name):
  local, remote = corpus
  here = token_files.TokenWindows([str(local / 'tokens' / name)], 65)
  there = token_files.TokenWindows([f'{remote}/tokens/{name}'], 65)
  assert len(here) == len(there) > 10
  for i in (0, 7, len(here) - 1):
    np.testing.assert_array_equal(here[i], there[i])
  cfg = _cfg(source='tokens', paths=f'{remote}/tokens', seq_len=64, batch_size=4)
  batch = next(pipeline.make_train_iterator(cfg, TOK, seed=0, process_index=0,
                                            process_count=1))
  assert batch['inputs'].shape == (4, 64)


def test_a_training_batch_streams_from_a_bucket(corpus):
  _, remote = corpus
  cfg = _cfg(source='jsonl', paths=f'{remote}/jsonl/*.jsonl', seq_len=32, batch_size=2)
  batch = next(pipeline.make_train_iterator(cfg, TOK, seed=0, process_index=0,
                                            process_count=1))
  assert b'json ' in TOK.decode_bytes(batch['inputs'][0])


def test_sentencepiece_tokenizer_from_a_bucket(corpus, tmp_path):
  local, remote = corpus
  cfg = _cfg(source='text', paths=f'{remote}/text', val_fraction=0.0)
  tok, _ = tokenizer_train.train(cfg, 300, str(tmp_path / 'spm.model'), 'spm-bpe')
  epath.Path(f'{remote}/tok/spm.model').write_bytes((tmp_path / 'spm.model').read_bytes())
  there = tokenizer_lib.make_tokenizer(f'sentencepiece:{remote}/tok/spm.model')
  text = (local / 'text' / 'doc3.txt').read_text()
  assert there.vocab_size == tok.vocab_size == 300
  np.testing.assert_array_equal(there.encode(text), tok.encode(text))
  assert there.decode(there.encode(text)) == text


def test_hf_streaming_of_bucket_files(corpus):
  pytest.importorskip('datasets')
  _, remote = corpus
  cfg = _cfg(source='hf', hf_name='json', hf_data_files=f'{remote}/jsonl/part0.jsonl',
             hf_streaming=True, seq_len=32, batch_size=2)
  batch = next(pipeline.make_train_iterator(cfg, TOK, seed=0, process_index=0,
                                            process_count=1))
  assert b'json 0-' in TOK.decode_bytes(batch['inputs'][0])


def test_arrayrecord_in_a_bucket_is_refused_in_one_line(corpus):
  # array_record's reader opens paths in C++, not through epath: it cannot read gs://.
  _, remote = corpus
  epath.Path(f'{remote}/ar/x.array_record').write_bytes(b'not read')
  with pytest.raises(sources.DataError, match=r'data\.paths: ArrayRecord files must be local'):
    sources.get_source(_cfg(source='arrayrecord', paths=f'{remote}/ar/x.array_record'),
                       'train')

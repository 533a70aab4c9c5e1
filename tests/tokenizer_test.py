"""Tokenizers: byte, SentencePiece and HF BPE trained here on local text (no downloads)."""

import numpy as np
import pytest

from lattice import config as config_lib
from lattice.data import subword
from lattice.data import tokenizer as tokenizer_lib
from lattice.data import tokenizer_train

TEXT = ('def add(x, y):\n    """Adds — naïvely."""\n\treturn x + y  # 😀 ünïcode\n\n'
        'class Point:\n    pass\n')


@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
  folder = tmp_path_factory.mktemp('corpus')
  for i in range(40):
    (folder / f'doc{i}.txt').write_text(TEXT * (1 + i % 3) + f'value_{i} = {i * 7}\n')
  return config_lib.build({'data': {'source': 'text', 'paths': str(folder),
                                    'val_fraction': 0.1}}).data


@pytest.fixture(scope='module', params=['spm-bpe', 'spm-unigram', 'hf-bpe'])
def trained(request, corpus, tmp_path_factory):
  out = tmp_path_factory.mktemp(request.param)
  out = out / ('spm.model' if request.param.startswith('spm') else 'tok')
  return tokenizer_train.train(corpus, 320, str(out), request.param)


def test_round_trip_and_token_bytes(trained):
  tok, spec = trained
  ids = tok.encode(TEXT)
  assert tok.decode(ids) == TEXT
  assert len(ids) < len(TEXT.encode())            # subwords: fewer tokens than bytes
  table = tok.token_bytes()
  assert len(table) == tok.vocab_size
  # bpb's denominator: the targets' bytes add up to the text's UTF-8 length.
  assert sum(len(table[i]) for i in ids) == len(TEXT.encode())
  again = tokenizer_lib.make_tokenizer(spec)
  np.testing.assert_array_equal(again.encode(TEXT), ids)


def test_specials_and_markers(trained):
  tok, _ = trained
  ids = tok.encode('x = 1', bos=True, eos=True)
  assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id
  assert tok.decode(ids) == 'x = 1'
  assert len({tok.pad_id, tok.bos_id, tok.eos_id, tok.boi_id, tok.eoi_id, tok.img_id}) == 6
  assert tok.token_bytes()[tok.boi_id] == b''
  assert '<boi>' in tok.decode([tok.boi_id], skip_special=False)


def test_byte_tokenizer_token_bytes():
  tok = tokenizer_lib.make_tokenizer('byte')
  assert isinstance(tok, tokenizer_lib.ByteTokenizer)
  table = tok.token_bytes()
  assert table[65] == b'A' and table[tok.eos_id] == b'' and len(table) == tok.vocab_size


@pytest.mark.parametrize('spec, match', [
    ('wordpiece:x', 'is not byte'),
    ('sentencepiece:/nonexistent/spm.model', 'does not exist'),
    ('hf:/nonexistent/dir', 'no tokenizer.json'),
])
def test_bad_specs_name_the_field(spec, match):
  with pytest.raises(subword.TokenizerError, match=match) as e:
    tokenizer_lib.make_tokenizer(spec)
  assert str(e.value).startswith('data.tokenizer')


def test_vocab_too_small(corpus, tmp_path):
  with pytest.raises(ValueError, match='--vocab-size'):
    tokenizer_train.train(corpus, 100, str(tmp_path / 'x.model'), 'spm-bpe')

"""Train a subword tokenizer on a configured training source, with no downloads.

`train_sentencepiece` (BPE or unigram, SentencePiece) and `train_hf_bpe` (byte-level
BPE, Hugging Face `tokenizers`) read documents from any `lattice.data` source, so a
machine without internet still gets a real subword vocabulary for its corpus
(`lattice tokenizer train --config=FILE.py:MODE --vocab-size N --out PATH`).

Every trained vocabulary holds PAD, UNK, BOS and EOS at ids 0-3 and the modality
markers `<boi>`, `<eoi>`, `<img>` (see `lattice.data.subword.MARKERS`), so early
fusion and the task formats work with it. SentencePiece models are trained for
lossless round trips of code and prose: byte fallback on, no dummy prefix, no
whitespace folding, identity normalisation, and a newline piece (SentencePiece
splits its input into lines, so without the piece every newline would cost a
byte-fallback token).
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator

import sentencepiece as spm
import tokenizers
from etils import epath

from lattice import config as config_lib
from lattice.data import sources
from lattice.data import subword

SPECIALS = ('<pad>', '<unk>', '<s>', '</s>')
KINDS = ('spm-bpe', 'spm-unigram', 'hf-bpe')
# SentencePiece's trainer keeps sentences up to this many bytes (its default is 4192);
# longer lines are cut into pieces of this size.
_MAX_SENTENCE_BYTES = 4096


def documents(data_cfg: config_lib.DataConfig, max_bytes: int) -> Iterator[bytes]:
  """The training split's documents, in order, until `max_bytes` bytes are read.

  Raises:
    lattice.data.sources.DataError: the configured source cannot be read.
  """
  docs = sources.get_source(data_cfg, 'train')
  total = 0
  for i in range(len(docs)):
    doc = docs[i]
    doc = doc.encode('utf-8') if isinstance(doc, str) else bytes(doc)
    yield doc[:max(max_bytes - total, 0)]
    total += len(doc)
    if total >= max_bytes:
      return


def _lines(docs: Iterable[bytes]) -> Iterator[str]:
  for doc in docs:
    for line in doc.decode('utf-8', errors='replace').split('\n'):
      for start in range(0, max(len(line), 1), _MAX_SENTENCE_BYTES // 4):
        piece = line[start:start + _MAX_SENTENCE_BYTES // 4]
        if piece.strip():
          yield piece


def train_sentencepiece(docs: Iterable[bytes], vocab_size: int, out: str,
                        model_type: str = 'bpe') -> subword.SentencePieceTokenizer:
  """Trains a SentencePiece model on `docs` and writes it to `out` (`.model`).

  Args:
    docs: training documents (UTF-8 bytes).
    vocab_size: the vocabulary size, specials and byte-fallback pieces included
      (so at least 256 + 4 + 3 + 1).
    out: the `.model` path (local or `gs://`); its folder is created.
    model_type: `bpe` or `unigram`.

  Returns:
    The trained tokenizer, loaded back from `out`.

  Raises:
    ValueError: `vocab_size` too small for the byte fallback, or an unknown type.
  """
  if model_type not in ('bpe', 'unigram'):
    raise ValueError(f'train_sentencepiece: model_type {model_type!r} is not bpe or unigram')
  floor = 256 + len(SPECIALS) + len(subword.MARKERS) + 1
  if vocab_size <= floor:
    raise ValueError(f'--vocab-size: must exceed {floor} (256 byte-fallback pieces, '
                     f'specials and markers), got {vocab_size}')
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=_lines(docs), model_writer=model, vocab_size=vocab_size,
      model_type=model_type, byte_fallback=True, character_coverage=1.0,
      add_dummy_prefix=False, remove_extra_whitespaces=False,
      normalization_rule_name='identity', split_digits=True,
      allow_whitespace_only_pieces=True, max_sentence_length=_MAX_SENTENCE_BYTES,
      pad_id=0, unk_id=1, bos_id=2, eos_id=3,
      user_defined_symbols=['\n', *subword.MARKERS], hard_vocab_limit=False,
      minloglevel=2, num_threads=2)
  path = epath.Path(out)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(model.getvalue())
  return subword.SentencePieceTokenizer(str(path))


def train_hf_bpe(docs: Iterable[bytes], vocab_size: int, out: str) -> subword.HFTokenizer:
  """Trains a byte-level BPE (GPT-2 style, `tokenizers`) and writes `tokenizer.json`.

  Args:
    docs: training documents (UTF-8 bytes).
    vocab_size: the vocabulary size, the 256 byte symbols and specials included.
    out: a `tokenizer.json` path or a folder to hold one (local or `gs://`).

  Returns:
    The trained tokenizer, loaded back from `out`.
  """
  tok = tokenizers.Tokenizer(tokenizers.models.BPE())
  tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = tokenizers.decoders.ByteLevel()
  trainer = tokenizers.trainers.BpeTrainer(
      vocab_size=vocab_size, special_tokens=[*SPECIALS, *subword.MARKERS],
      initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
      show_progress=False)
  tok.train_from_iterator((d.decode('utf-8', errors='replace') for d in docs), trainer)
  path = epath.Path(out)
  if not path.name.endswith('.json'):
    path = path / 'tokenizer.json'
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(tok.to_str())
  return subword.HFTokenizer(str(path))


def train(data_cfg: config_lib.DataConfig, vocab_size: int, out: str,
          kind: str = 'spm-bpe', max_bytes: int = 200_000_000):
  """Trains a tokenizer of `kind` (one of `KINDS`) on `data_cfg`'s training split.

  Returns:
    (tokenizer, the `data.tokenizer` spec string that loads it).

  Raises:
    ValueError: an unknown kind (one line naming `--kind`).
  """
  docs = documents(data_cfg, max_bytes)
  if kind == 'hf-bpe':
    tok = train_hf_bpe(docs, vocab_size, out)
    return tok, f'hf:{tok.path}'
  if kind in ('spm-bpe', 'spm-unigram'):
    tok = train_sentencepiece(docs, vocab_size, out, model_type=kind.split('-')[1])
    return tok, f'sentencepiece:{tok.path}'
  raise ValueError(f'--kind: {kind!r} is not one of {", ".join(KINDS)}')


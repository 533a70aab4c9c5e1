"""Subword tokenizers: SentencePiece models and Hugging Face `tokenizers` files.

Both expose the interface of `lattice.data.tokenizer.ByteTokenizer` (`encode`,
`decode`, `decode_bytes`, `token_bytes`, `vocab_size` and the special ids), so the
pipeline, evaluation, sampling and serving take either. Nothing is downloaded: a
SentencePiece `.model` file or a `tokenizer.json` (or a folder holding one) is read
from a local path or any `etils.epath` path (`gs://...`); a Hugging Face hub name
is resolved only where the machine has internet (`tokenizers.Tokenizer.from_pretrained`).

Special tokens map onto the tokenizer's own: PAD, BOS and EOS from the model
(SentencePiece's `pad_id`/`bos_id`/`eos_id`; for HF files the first of the usual
names that exists); the modality markers `<boi>`, `<eoi>`, `<img>` are looked up as
pieces, and are `None` when the vocabulary lacks them (`lattice tokenizer train`
always adds them), so a technique that needs them can say so in one line.

`token_bytes()` gives, per id, the UTF-8 bytes that token contributes to decoded text
(specials: none). Bits per byte use it (bpb = nats / ln 2 / bytes of the targets'
text), and so does the constrained decoder's token table.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

import numpy as np
import sentencepiece as spm
import tokenizers
from etils import epath

from lattice.errors import ConfigError

# The modality markers a lattice-trained tokenizer reserves (see tokenizer.py).
MARKERS = ('<boi>', '<eoi>', '<img>')
_PAD_NAMES = ('<pad>', '[PAD]', '<|pad|>', '<|endoftext|>')
_BOS_NAMES = ('<s>', '<bos>', '<|begin_of_text|>', '[CLS]', '<|endoftext|>')
_EOS_NAMES = ('</s>', '<eos>', '<|end_of_text|>', '<|endoftext|>', '<|im_end|>', '[SEP]')


class TokenizerError(ConfigError):
  """A tokenizer spec or file a user can fix; the message names `data.tokenizer`."""


def _byte_piece(piece: str) -> int | None:
  """0xAB for a byte-fallback piece `<0xAB>`, else None."""
  if len(piece) == 6 and piece.startswith('<0x') and piece.endswith('>'):
    try:
      return int(piece[3:5], 16)
    except ValueError:
      return None
  return None


class _Subword:
  """Shared encode/decode plumbing over a `token_bytes` table."""

  vocab_size: int
  pad_id: int
  bos_id: int | None
  eos_id: int | None
  boi_id: int | None
  eoi_id: int | None
  img_id: int | None

  def _encode_ids(self, text: str) -> list[int]:
    raise NotImplementedError

  def _is_special(self, i: int) -> bool:
    raise NotImplementedError

  def encode(self, text: str | bytes, bos: bool = False, eos: bool = False) -> np.ndarray:
    """int32 ids of `text`, optionally wrapped in BOS/EOS.

    Raises:
      TypeError: `text` is neither str nor bytes.
      TokenizerError: BOS/EOS asked for but the vocabulary has none.
    """
    if isinstance(text, (bytes, bytearray, memoryview)):
      text = bytes(text).decode('utf-8', errors='replace')
    elif not isinstance(text, str):
      raise TypeError(f'encode: expected str or bytes, got {type(text).__name__}')
    ids = self._encode_ids(text)
    if bos:
      if self.bos_id is None:
        raise TokenizerError('data.tokenizer: this vocabulary has no BOS token')
      ids = [self.bos_id, *ids]
    if eos:
      if self.eos_id is None:
        raise TokenizerError('data.tokenizer: this vocabulary has no EOS token')
      ids = [*ids, self.eos_id]
    return np.asarray(ids, dtype=np.int32)

  @functools.cached_property
  def _bytes(self) -> list[bytes]:
    return self.token_bytes()

  def decode_bytes(self, ids: Iterable[int] | np.ndarray, skip_special: bool = True) -> bytes:
    """UTF-8 bytes of `ids`. Ids outside the vocabulary (a padded embedding can emit
    them) and specials are dropped, or rendered as `<name>` / `<unk_ID>` when kept."""
    table = self._bytes
    out = bytearray()
    for i in np.asarray(ids, dtype=np.int64).reshape(-1).tolist():
      if 0 <= i < len(table) and not self._is_special(i):
        out += table[i]
      elif not skip_special:
        out += (self._special_name(i) if 0 <= i < len(table) else f'<unk_{i}>').encode()
    return bytes(out)

  def decode(self, ids: Iterable[int] | np.ndarray, skip_special: bool = True) -> str:
    """Text of `ids`; invalid UTF-8 becomes U+FFFD. Does not stop at EOS/PAD."""
    return self.decode_bytes(ids, skip_special).decode('utf-8', errors='replace')

  def token_bytes(self) -> list[bytes]:
    raise NotImplementedError

  def _special_name(self, i: int) -> str:
    raise NotImplementedError


class SentencePieceTokenizer(_Subword):
  """A SentencePiece model (`.model` file, BPE or unigram), local or remote.

  Decoding concatenates each piece's bytes ('▁' is a space, `<0xAB>` byte-fallback
  pieces are that byte), so `decode(encode(t)) == t` for models trained without a
  dummy prefix and without whitespace normalisation (as `lattice tokenizer train`
  trains them); other models may add or fold whitespace as SentencePiece does.
  """

  def __init__(self, path: str):
    p = epath.Path(path)
    if not p.exists():
      raise TokenizerError(f'data.tokenizer: SentencePiece model {path} does not exist')
    self.path = str(path)
    self._sp = spm.SentencePieceProcessor(model_proto=p.read_bytes())
    self.vocab_size = int(self._sp.get_piece_size())
    ids = lambda i: int(i) if i is not None and i >= 0 else None  # noqa: E731
    self.bos_id, self.eos_id = ids(self._sp.bos_id()), ids(self._sp.eos_id())
    pad = ids(self._sp.pad_id())
    self.pad_id = pad if pad is not None else ids(self._sp.unk_id()) or 0
    self.boi_id, self.eoi_id, self.img_id = (self._marker(m) for m in MARKERS)

  def _marker(self, piece: str) -> int | None:
    i = int(self._sp.piece_to_id(piece))
    return i if i != self._sp.unk_id() else None

  def _encode_ids(self, text: str) -> list[int]:
    return list(self._sp.encode(text))

  def _is_special(self, i: int) -> bool:
    return bool(self._sp.is_control(i) or self._sp.is_unknown(i)) or i in (
        self.boi_id, self.eoi_id, self.img_id)

  def _special_name(self, i: int) -> str:
    return self._sp.id_to_piece(i)

  def token_bytes(self) -> list[bytes]:
    """Per id, the bytes the piece contributes ('▁' -> b' ', `<0xAB>` -> b'\\xab');
    control, unknown and marker pieces: b''."""
    out = []
    for i in range(self.vocab_size):
      piece = self._sp.id_to_piece(i)
      byte = _byte_piece(piece) if self._sp.is_byte(i) else None
      if byte is not None:
        out.append(bytes([byte]))
      elif self._is_special(i):
        out.append(b'')
      else:
        out.append(piece.replace('\u2581', ' ').encode('utf-8'))
    return out


@functools.lru_cache(maxsize=1)
def _gpt2_alphabet() -> dict[str, int]:
  """GPT-2's printable-character alphabet for bytes, inverted (char -> byte).

  Source: `bytes_to_unicode` of GPT-2 (Radford et al. 2019), the alphabet byte-level
  BPE tokenizers (`tokenizers.pre_tokenizers.ByteLevel`) write their pieces in.
  """
  printable = (list(range(ord('!'), ord('~') + 1)) + list(range(ord('¡'), ord('¬') + 1))
               + list(range(ord('®'), ord('ÿ') + 1)))
  chars, n = list(printable), 0
  for b in range(256):
    if b not in printable:
      printable.append(b)
      chars.append(256 + n)
      n += 1
  return {chr(c): b for b, c in zip(printable, chars)}


class HFTokenizer(_Subword):
  """A Hugging Face `tokenizers` tokenizer: a `tokenizer.json` file, a folder that
  holds one (e.g. a model checkpoint folder), or a hub name on a machine with
  internet access."""

  def __init__(self, name_or_path: str):
    p = epath.Path(name_or_path)
    if p.is_dir():
      p = p / 'tokenizer.json'
    if p.exists():
      self._tok = tokenizers.Tokenizer.from_str(p.read_text())
    elif '/' in name_or_path and not str(name_or_path).startswith(('.', '/')) \
        and '://' not in str(name_or_path):
      try:
        self._tok = tokenizers.Tokenizer.from_pretrained(name_or_path)
      except Exception as e:  # noqa: BLE001  (hub errors vary; one line for the user)
        raise TokenizerError(f'data.tokenizer: cannot load hf:{name_or_path} '
                             f'(no such local file; hub: {type(e).__name__})') from None
    else:
      raise TokenizerError(f'data.tokenizer: {name_or_path} has no tokenizer.json')
    self.path = str(name_or_path)
    self.vocab_size = int(self._tok.get_vocab_size(with_added_tokens=True))
    vocab = self._tok.get_vocab(with_added_tokens=True)
    first = lambda names: next((vocab[n] for n in names if n in vocab), None)  # noqa: E731
    self.bos_id, self.eos_id = first(_BOS_NAMES), first(_EOS_NAMES)
    pad = first(_PAD_NAMES)
    self.pad_id = pad if pad is not None else (self.eos_id or 0)
    self.boi_id, self.eoi_id, self.img_id = (vocab.get(m) for m in MARKERS)
    self._special = {t.content: i for i, t in self._tok.get_added_tokens_decoder().items()
                     if t.special}
    self._special_ids = frozenset(self._special.values())
    decoder = (self._tok.decoder.__class__.__name__ if self._tok.decoder else '')
    self._byte_level = decoder == 'ByteLevel'

  def _encode_ids(self, text: str) -> list[int]:
    return self._tok.encode(text, add_special_tokens=False).ids

  def _is_special(self, i: int) -> bool:
    return i in self._special_ids

  def _special_name(self, i: int) -> str:
    return self._tok.id_to_token(i) or f'<unk_{i}>'

  def token_bytes(self) -> list[bytes]:
    """Per id, the bytes the token contributes: byte-level BPE tokens through GPT-2's
    byte alphabet; metaspace tokens with '▁' as a space and `<0xAB>` as that byte;
    special tokens b''."""
    alphabet = _gpt2_alphabet() if self._byte_level else None
    out = []
    for i in range(self.vocab_size):
      tok = self._tok.id_to_token(i)
      if tok is None or i in self._special_ids:
        out.append(b'')
      elif alphabet is not None:
        out.append(bytes(alphabet[c] for c in tok if c in alphabet))
      elif (byte := _byte_piece(tok)) is not None:
        out.append(bytes([byte]))
      else:
        out.append(tok.replace('\u2581', ' ').encode('utf-8'))
    return out

"""Byte-level tokenizer: UTF-8 bytes plus a few special tokens; needs no download.

Ids 0..255 are the raw bytes. Specials follow so that every byte keeps its own id:

  256 PAD, 257 BOS, 258 EOS,
  259 BOI (image start), 260 EOI (image end), 261 IMG (image-patch placeholder),
  262..271 reserved for later modalities / task markers (tool calls, ...).

The vocabulary is 272; `padded_vocab_size` rounds it up so the embedding and
logits matrices have MXU/tensor-core friendly shapes (272 -> 384).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from lattice.data import subword

N_BYTES = 256
PAD_ID = 256
BOS_ID = 257
EOS_ID = 258
BOI_ID = 259
EOI_ID = 260
IMG_ID = 261
FIRST_RESERVED_ID = 262
VOCAB_SIZE = 272
RESERVED_IDS = tuple(range(FIRST_RESERVED_ID, VOCAB_SIZE))

SPECIAL_NAMES = {
    PAD_ID: '<pad>', BOS_ID: '<bos>', EOS_ID: '<eos>',
    BOI_ID: '<boi>', EOI_ID: '<eoi>', IMG_ID: '<img>',
    **{i: f'<reserved_{i - FIRST_RESERVED_ID}>' for i in RESERVED_IDS},
}


class ByteTokenizer:
  """UTF-8 byte tokenizer with PAD/BOS/EOS and reserved modality markers."""

  pad_id = PAD_ID
  bos_id = BOS_ID
  eos_id = EOS_ID
  boi_id = BOI_ID
  eoi_id = EOI_ID
  img_id = IMG_ID
  vocab_size = VOCAB_SIZE

  def encode(self, text: str | bytes, bos: bool = False,
             eos: bool = False) -> np.ndarray:
    """Returns int32 ids of `text`'s UTF-8 bytes, optionally wrapped in BOS/EOS."""
    if isinstance(text, str):
      text = text.encode('utf-8')
    elif not isinstance(text, (bytes, bytearray, memoryview)):
      raise TypeError(f'encode: expected str or bytes, got {type(text).__name__}')
    body = np.frombuffer(text, dtype=np.uint8)
    ids = np.empty(len(body) + bos + eos, dtype=np.int32)
    ids[int(bos):int(bos) + len(body)] = body
    if bos:
      ids[0] = BOS_ID
    if eos:
      ids[-1] = EOS_ID
    return ids

  def decode_bytes(self, ids: Iterable[int] | np.ndarray,
                   skip_special: bool = True) -> bytes:
    """Bytes of `ids`; specials are dropped, or rendered as `<name>` when kept.

    Ids outside the vocabulary (a model with a padded vocabulary can emit them)
    count as specials: dropped, or rendered as `<unk_ID>`.
    """
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    if skip_special:
      return ids[(ids >= 0) & (ids < N_BYTES)].astype(np.uint8).tobytes()
    out = bytearray()
    for i in ids.tolist():
      if 0 <= i < N_BYTES:
        out.append(i)
      else:
        out += SPECIAL_NAMES.get(i, f'<unk_{i}>').encode('ascii')
    return bytes(out)

  def decode(self, ids: Iterable[int] | np.ndarray,
             skip_special: bool = True) -> str:
    """Text of `ids`; invalid UTF-8 becomes U+FFFD. Does not stop at EOS/PAD."""
    return self.decode_bytes(ids, skip_special).decode('utf-8', errors='replace')

  def token_bytes(self) -> list[bytes]:
    """Per id, the bytes it contributes to decoded text (specials: b'')."""
    return [bytes([i]) for i in range(N_BYTES)] + [b''] * (VOCAB_SIZE - N_BYTES)


def padded_vocab_size(tokenizer: ByteTokenizer, multiple: int = 128) -> int:
  """The vocabulary rounded up to a multiple of `multiple` (272 -> 384)."""
  if multiple <= 0:
    raise ValueError(f'padded_vocab_size: multiple must be positive, got {multiple}')
  return -(-tokenizer.vocab_size // multiple) * multiple


def make_tokenizer(spec: str = 'byte'):
  """The tokenizer `data.tokenizer` names.

  Args:
    spec: `byte` (the embedded byte tokenizer), `sentencepiece:PATH` (a `.model`
      file, local or `gs://`), or `hf:NAME_OR_DIR` (a `tokenizer.json`, a folder
      holding one, or a Hugging Face hub name where the machine has internet).

  Returns:
    An object with ByteTokenizer's interface (`encode`, `decode`, `decode_bytes`,
    `token_bytes`, `vocab_size`, `pad_id`, `bos_id`, `eos_id`, `boi_id`, `eoi_id`,
    `img_id`; the last three may be None for a subword vocabulary without markers).

  Raises:
    lattice.data.subword.TokenizerError: an unknown kind or a missing file, in one
      line naming `data.tokenizer`.
  """
  kind, _, arg = (spec or 'byte').partition(':')
  if kind == 'byte' and not arg:
    return ByteTokenizer()
  if kind in ('sentencepiece', 'spm') and arg:
    return subword.SentencePieceTokenizer(arg)
  if kind == 'hf' and arg:
    return subword.HFTokenizer(arg)
  raise subword.TokenizerError(
      f'data.tokenizer: {spec!r} is not byte, sentencepiece:PATH or hf:NAME_OR_DIR')


def vocab_bytes(tok, vocab_size: int) -> list[bytes | None]:
  """Per id of a (padded) model vocabulary, the bytes the token writes, or None for
  specials and padding ids: the token table the constrained decoder builds from."""
  table = tok.token_bytes()
  specials = {tok.pad_id, tok.bos_id, tok.eos_id, tok.boi_id, tok.eoi_id, tok.img_id}
  return [table[i] if i < len(table) and i not in specials and table[i] else None
          for i in range(vocab_size)]


def byte_lengths(tok) -> np.ndarray:
  """int32[V]: UTF-8 bytes each token writes (specials 0): bpb's denominator."""
  return np.asarray([len(b) for b in tok.token_bytes()], np.int32)

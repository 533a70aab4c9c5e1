"""One choice's output as it is generated: text, stop strings, finish reason, logprobs.

`Choice.on_token` / `Choice.on_done` are the engine callbacks (they run on the
engine thread); each turns tokens into `Delta`s handed to `emit` (thread-safe, e.g.
`loop.call_soon_threadsafe`). Text is decoded incrementally (an incomplete UTF-8
sequence waits for its next byte; invalid bytes become U+FFFD exactly as a one-shot
decode does), so the streamed deltas concatenate to the non-streamed text. Text
that could still turn into a stop string (or, with `hold`, into the tool-call
marker) is held back until it cannot.

`finish_reason` comes from tokens: `stop` when the model produced EOS or a stop
string, or when a constrained output is complete and nothing but EOS could follow;
`length` when the token budget ran out first.
"""

from __future__ import annotations

import codecs
import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from lattice.data import tokenizer as tokenizer_lib
from lattice.decode import constraints as constraints_lib
from lattice.serve import engine as engine_lib


class TokenTable:
  """A served model's tokens as OpenAI prints them, from its configured tokenizer
  (`data.tokenizer`: bytes or a subword vocabulary).

  `bytes(id)`: the UTF-8 bytes the token writes (specials and padding ids: none);
  `text(id)`: its text when those bytes are valid UTF-8, `bytes:\\xNN...` when not
  (a lone non-ASCII byte), the special's name (`<eos>`) for a special.
  """

  def __init__(self, tok):
    self.tok = tok
    self._bytes = tokenizer_lib.vocab_bytes(tok, len(tok.token_bytes()))

  def bytes(self, token_id: int) -> list[int]:
    b = self._bytes[token_id] if 0 <= token_id < len(self._bytes) else None
    return list(b) if b else []

  def text(self, token_id: int) -> str:
    b = self._bytes[token_id] if 0 <= token_id < len(self._bytes) else None
    if not b:
      return self.tok.decode_bytes([token_id], skip_special=False).decode('utf-8', 'replace')
    try:
      return b.decode('utf-8')
    except UnicodeDecodeError:
      return 'bytes:' + ''.join(f'\\x{c:02x}' for c in b)

  def decode(self, ids) -> str:
    """Text of `ids` (specials dropped)."""
    return self.tok.decode(ids)


BYTES = TokenTable(tokenizer_lib.ByteTokenizer())


@dataclasses.dataclass
class Delta:
  index: int
  text: str = ''
  tokens: list[engine_lib.Token] = dataclasses.field(default_factory=list)
  finish_reason: str | None = None
  error: Exception | None = None
  so_far: str = ''  # the choice's whole text at this delta (held text included)


def complete(index: constraints_lib.Index, state: Any) -> bool:
  """Whether a constrained output in `state` is a whole match nothing can extend."""
  need = index.need_row(state)
  others = np.delete(need, index.eos_id)
  return bool(need[index.eos_id] == 0 and (others >= constraints_lib.INF).all())


class Choice:
  """Accumulates one choice; see the module docstring."""

  def __init__(self, index: int, stops: list[str], emit: Callable[[Delta], None], *,
               eos_id: int, hold: str | None = None, table: TokenTable = BYTES):
    self.index, self.stops, self.emit, self.eos_id = index, stops, emit, eos_id
    self.table = table
    self.hold = hold   # a prefix (tool-call marker) whose text is never streamed
    self._decoder = codecs.getincrementaldecoder('utf-8')(errors='replace')
    self.text = ''        # all text so far (cut at a stop string)
    self.sent = 0         # characters of text already emitted
    self.tokens: list[engine_lib.Token] = []
    self._out: list[engine_lib.Token] = []  # tokens already emitted
    self.n_tokens = 0
    self.finish_reason: str | None = None
    self.cancelled = False  # set from another thread: stop at the next token
    self._longest_stop = max((len(s) for s in stops), default=0)

  def _held(self) -> int:
    """How many trailing characters could still be the start of a stop string."""
    if self.hold is not None and (self.text.startswith(self.hold)
                                  or self.hold.startswith(self.text)):
      return len(self.text) - self.sent
    for k in range(min(self._longest_stop - 1, len(self.text)), 0, -1):
      tail = self.text[-k:]
      if any(s.startswith(tail) for s in self.stops):
        return k
    return 0

  def _flush(self, finish: str | None) -> None:
    end = len(self.text) if finish else len(self.text) - self._held()
    delta = Delta(self.index, self.text[self.sent:end], self.tokens[len(self._out):],
                  finish, so_far=self.text)
    self.sent = max(self.sent, end)
    self._out = list(self.tokens)
    if delta.text or delta.tokens or finish:
      self.emit(delta)

  def on_token(self, seq: engine_lib.Sequence, tok: engine_lib.Token) -> None:
    if self.finish_reason is not None:
      return
    if self.cancelled:
      seq.finished = True
    self.n_tokens += 1
    self.tokens.append(tok)
    if tok.id == self.eos_id:
      self.text += self._decoder.decode(b'', final=True)
      self.finish_reason = 'stop'
      return
    before = len(self.text)
    self.text += self._decoder.decode(bytes(self.table.bytes(tok.id)))
    if self.stops and not (self.hold is not None and self.text.startswith(self.hold)):
      start = max(before - self._longest_stop, 0)
      hits = [i for i in (self.text.find(s, start) for s in self.stops) if i >= 0]
      if hits:
        self.text = self.text[:min(hits)]
        self.finish_reason = 'stop'
        seq.finished = True  # the engine frees the slot after this call
        return
    self._flush(None)

  def on_done(self, seq: engine_lib.Sequence, error: Exception | None) -> None:
    if error is not None:
      self.emit(Delta(self.index, error=error))
      return
    if self.finish_reason is None:
      self.text += self._decoder.decode(b'', final=True)
      done = seq.constraint is not None and complete(seq.constraint, seq.cstate)
      self.finish_reason = 'stop' if done else 'length'
    self._flush(self.finish_reason)

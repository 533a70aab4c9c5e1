"""Constrained-decoding engines behind one interface, on lattice's byte vocabulary.

Each engine compiles a JSON schema for the same vocabulary (ids 0-255 the bytes,
`EOS_ID` the end, the other specials never allowed) and then walks: `start()` a
state, `allowed(state)` the boolean mask over ids (host-side, as the engine
computes it per sequence), `advance(state, id)` the next state. lattice's mask is
also computed inside the jitted decode loop; here it is its table row read on the
host, the same operation outside XLA.

Engines: `lattice` (this repository), `llguidance`, `xgrammar`, `outlines` (the
`outlines-core` Rust index). The last three are optional: `pip install
'lattice[bench]'`; `available()` lists the importable ones.
"""

from __future__ import annotations

import importlib.util
import json
from typing import Any

import numpy as np

from lattice.data import tokenizer as tok_lib
from lattice.decode import constraints

V = tok_lib.VOCAB_SIZE
EOS = tok_lib.EOS_ID
_MODULES = {'lattice': 'lattice', 'llguidance': 'llguidance', 'xgrammar': 'xgrammar',
            'outlines': 'outlines_core'}


def available() -> list[str]:
  return [k for k, m in _MODULES.items() if importlib.util.find_spec(m) is not None]


class Lattice:
  """lattice: schema -> DFA -> token tables; the mask is a table row."""
  name = 'lattice'

  def compile(self, schema: dict) -> Any:
    return constraints.for_schema(schema, constraints.byte_vocab(V))

  def start(self, g):
    return g.start_state

  def allowed(self, g, state) -> np.ndarray:
    return g.need_row(state) < constraints.INF

  def advance(self, g, state, token: int):
    return g.step(state, token)


class _ByteTokenizer:
  """The minimal tokenizer object llguidance's TokenizerWrapper reads."""
  eos_token_id = EOS
  bos_token_id = tok_lib.BOS_ID

  def __init__(self):
    self.tokens = [bytes([i]) for i in range(256)] + [
        b'<special_%d>' % i for i in range(256, V)]
    self.special_token_ids = list(range(256, V))

  def __call__(self, data: bytes) -> list[int]:
    return list(data)


class Llguidance:
  name = 'llguidance'

  def __init__(self):
    import llguidance  # pylint: disable=g-import-not-at-top
    self.llg = llguidance
    self.tok = llguidance.LLTokenizer(llguidance.TokenizerWrapper(_ByteTokenizer()),
                                      n_vocab=V)

  def compile(self, schema: dict) -> Any:
    grammar = self.llg.LLMatcher.grammar_from_json_schema(
        json.dumps(schema), defaults={'whitespace_flexible': False})
    m = self.llg.LLMatcher(self.tok, grammar)
    if m.is_error():
      raise ValueError(m.get_error())
    return grammar

  def start(self, g):
    return self.llg.LLMatcher(self.tok, g)

  def allowed(self, g, m) -> np.ndarray:
    bits = np.frombuffer(m.compute_bitmask(), np.uint32)
    return np.unpackbits(bits.view(np.uint8), bitorder='little')[:V].astype(bool)

  def advance(self, g, m, token: int):
    m.consume_token(token)
    return m


class Xgrammar:
  name = 'xgrammar'

  def __init__(self):
    import xgrammar  # pylint: disable=g-import-not-at-top
    self.xgr = xgrammar
    vocab = [bytes([i]) for i in range(256)] + [b''] * (V - 256)
    info = xgrammar.TokenizerInfo(vocab, xgrammar.VocabType.RAW, vocab_size=V,
                                  stop_token_ids=[EOS])
    self.compiler = xgrammar.GrammarCompiler(info, cache_enabled=False)

  def compile(self, schema: dict) -> Any:
    return self.compiler.compile_json_schema(json.dumps(schema), any_whitespace=False,
                                             separators=(',', ':'))

  def start(self, g):
    return self.xgr.GrammarMatcher(g)

  def allowed(self, g, m) -> np.ndarray:
    bitmask = self.xgr.allocate_token_bitmask(1, V)
    m.fill_next_token_bitmask(bitmask)
    bits = bitmask.numpy().view(np.uint32).reshape(-1)
    return np.unpackbits(bits.view(np.uint8), bitorder='little')[:V].astype(bool)

  def advance(self, g, m, token: int):
    if not m.accept_token(token):
      raise ValueError(f'xgrammar rejected token {token} it allowed')
    return m


class Outlines:
  name = 'outlines'

  def __init__(self):
    import outlines_core  # pylint: disable=g-import-not-at-top
    self.oc = outlines_core
    # outlines-core keys tokens by text, so a lone non-ASCII byte has no spelling:
    # it gets the 128 ASCII bytes (it cannot write non-ASCII characters here).
    mapping = {chr(i): [i] for i in range(128)}
    self.vocab = outlines_core.Vocabulary(EOS, mapping)

  def compile(self, schema: dict) -> Any:
    regex = self.oc.json_schema.build_regex_from_schema(json.dumps(schema))
    return self.oc.Index(regex, self.vocab)

  def start(self, g):
    return g.get_initial_state()

  def allowed(self, g, state) -> np.ndarray:
    mask = np.zeros(V, bool)
    toks = g.get_allowed_tokens(state)
    if toks:
      mask[np.asarray(toks)] = True
    return mask

  def advance(self, g, state, token: int):
    return g.get_next_state(state, token)


ENGINES = {'lattice': Lattice, 'llguidance': Llguidance, 'xgrammar': Xgrammar,
           'outlines': Outlines}

"""Counted loops carried as a counter in the decode loop; token tables over byte classes.

Shape legend: S automaton states (padded), C byte classes, K table columns (the
classes, one for specials, one for EOS; padded), V vocabulary (the model's
logits width), B batch.

`automaton.to_counted_dfa` keeps each counted loop X{lo,hi} (a `maxLength`
string's characters, a pattern's `[a-z]{1,64}`) as its minimal loop DFA and a
counter, where `automaton.to_dfa` unrolls it into hi + 1 copies of the loop's
states (a string with maxLength 256: ~260 states there, 2 here). The decoder's
state is then a pair (s, c), c the characters written so far in the loop s is
in. The rules are those of `dfa_native.unroll`, so the language is exactly the
unrolled DFA's (`tests/counted_test.py` checks both ways):

  PLAIN  from a state outside loops to one outside, or into a loop's hub: c' = 0
  INNER  inside a loop, not back to its hub: c' = c; from the hub it starts a
         character, allowed only while c < hi
  COUNT  inside a loop, back to its hub (a character written): needs c < hi;
         c' = min(c + 1, cap), cap = hi (lo when unbounded: c saturates there)
  LEAVE  from a hub out of its loop: needs c >= lo; c' = 0
  EOS    the end token: an accepting state, and c >= lo in a hub (a state
         inside a character never accepts); c' = c

Any other edge rejects (into a character state from outside, out of one).

`CountedIndex` holds per state and column the target, the edge kind and the
static part of the need, and per state its loop's lo, hi, cap and m. For
one-byte tokens the fewest tokens from (s, c) to an accepting state is exactly

  need(s, c) = base[s] - m[s] * min(c + off[s], lo[s])

(off 0 at a hub, 1 inside a character; m the fewest bytes of one character):
from a hub, max(0, lo - c) more characters of at least m bytes, then the fewest
bytes out of the loop to acceptance, where every loop entered later starts at
c = 0, so its lo x m is a fixed cost of entering it (one breadth-first search
over the states outside loops and the hubs, each edge into a hub lengthened by a
chain of lo x m extra states, gives base). A token v is allowed in
(s, c) when the need after it fits in the steps left (`lattice.decode.sampling`),
computed in the jitted loop from one gathered row per table and the row's c:
no S x V table (built in O(S x C), not O(S x V)) and no host round trip. Only
for vocabularies holding every byte as a one-byte token (the byte tokenizer);
`constraints.build_index` uses the unrolled DFA for any other.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.struct
import jax.numpy as jnp
import numpy as np

from lattice.decode import automaton, dfa_native

INF = 2**30  # (constraints.INF)
PLAIN, INNER, COUNT, LEAVE, EOS = 0, 1, 2, 3, 4
# State kinds: outside loops, a loop's hub, inside a character, unused (a second
# hub-tagged state; `dfa_native.unroll` drops it).
_OUT, _HUB, _MID, _UNUSED = 0, 1, 2, 3


def _plain(dfa: automaton.Dfa) -> automaton.CountedDfa:
  S, C = dfa.delta_SxC.shape
  return automaton.CountedDfa(dfa.delta_SxC, dfa.byte_class, dfa.accepting,
                              np.full(S, -1, np.int64), np.zeros((S, C), bool),
                              np.zeros(0, np.int64), np.zeros(0, np.int64))


def _edges(cdfa: automaton.CountedDfa):
  """(next int32[S, C] (-1: rejected), kind int8[S, C], state kind int8[S],
  loop int64[S] (-1: none)). The rules for the few rows inside loops; the
  others only reject edges into a character state."""
  tag = cdfa.tag_S
  S = len(tag)
  d = np.ascontiguousarray(cdfa.delta_SxC, np.int32)
  loop = np.where(tag >= 0, tag // 2, -1)
  if not len(cdfa.lo_R):
    return d, np.zeros(d.shape, np.int8), np.zeros(S, np.int8), loop
  sk = np.where(tag < 0, _OUT, _UNUSED).astype(np.int8)
  hubs = np.flatnonzero((tag >= 0) & (tag % 2 == 0))
  _, first = np.unique(tag[hubs], return_index=True)
  hub_R = np.full(len(cdfa.lo_R), -1, np.int64)
  hub_R[tag[hubs[first]] // 2] = hubs[first]
  sk[hubs[first]] = _HUB
  sk[(tag >= 0) & (tag % 2 == 1) & (hub_R[np.maximum(loop, 0)] >= 0)] = _MID
  # Outside loops: into states outside loops or a loop's hub (copy 0 there).
  nxt = np.where(sk[np.maximum(d, 0)] <= _HUB, d, -1).astype(np.int32)
  kind = np.zeros(d.shape, np.int8)
  rows = np.flatnonzero((sk == _HUB) | (sk == _MID))
  d_L = d[rows].astype(np.int64)
  t_L = np.maximum(d_L, 0)
  tk = sk[t_L]
  inner = cdfa.internal_SxC[rows] & (d_L >= 0)
  same = loop[t_L] == loop[rows][:, None]
  k_L = np.full(d_L.shape, -1, np.int8)
  k_L[inner & same & (tk == _HUB)] = COUNT
  k_L[inner & same & (tk == _MID)] = INNER
  k_L[(sk[rows] == _HUB)[:, None] & ~inner & (d_L >= 0) & (tk <= _HUB)] = LEAVE
  nxt[rows] = np.where(k_L >= 0, d_L, -1)
  kind[rows] = np.maximum(k_L, 0)
  return nxt, kind, sk, loop


# (For `matches`, called per string in tests; `build` calls `_edges` once.)
_edges_cached = functools.lru_cache(maxsize=8)(_edges)


def _loop_params(cdfa: automaton.CountedDfa, loop: np.ndarray):
  """Per state (lo, hi, cap) of its loop (0, INF, 0 outside loops), int64."""
  if not len(cdfa.lo_R):
    z = np.zeros(len(loop), np.int64)
    return z, np.full(len(loop), INF, np.int64), z
  r = np.maximum(loop, 0)
  lo = np.where(loop >= 0, cdfa.lo_R[r], 0)
  hi_r = cdfa.hi_R[r]
  hi = np.where((loop >= 0) & (hi_r >= 0), hi_r, INF)
  cap = np.where(loop < 0, 0, np.where(hi_r >= 0, hi_r, lo))
  return lo, hi, cap


def _move(cdfa, nxt, kind, sk, lo, hi, cap, s: int, c: int, cls: int):
  """(s', c') after one byte of class `cls` from (s, c); None: rejected."""
  t, e = int(nxt[s, cls]), int(kind[s, cls])
  if t < 0:
    return None
  if e == COUNT or (e == INNER and sk[s] == _HUB):
    if c >= hi[s]:
      return None
  if e == LEAVE and c < lo[s]:
    return None
  return t, (c if e == INNER else min(c + 1, int(cap[s])) if e == COUNT else 0)


def matches(cdfa: automaton.CountedDfa, data: bytes) -> bool:
  """Whether `data` is in `cdfa`'s language (read with the counter)."""
  nxt, kind, sk, loop = _edges_cached(cdfa)
  lo, hi, cap = _loop_params(cdfa, loop)
  if sk[0] not in (_OUT, _HUB):
    return False
  s, c = 0, 0
  for b in data:
    got = _move(cdfa, nxt, kind, sk, lo, hi, cap, s, c, int(cdfa.byte_class[b]))
    if got is None:
      return False
    s, c = got
  return bool(cdfa.accepting[s]) and (sk[s] == _OUT or (sk[s] == _HUB and c >= lo[s]))


def _bases(cdfa, nxt, kind, sk, loop, lo):
  """(base int64[S] (INF: none), m int64[S]): see the module docstring."""
  S, C = nxt.shape
  hub = sk == _HUB
  if not hub.any():  # No loops (edges into states of hubless loops are rejected).
    dist = automaton.distances_to_accept(nxt, cdfa.accepting & (sk == _OUT))
    return np.where(dist >= 0, dist, INF), np.zeros(S, np.int64)
  rows = np.flatnonzero(hub | (sk == _MID))
  pos = np.full(S, -1, np.int64)
  pos[rows] = np.arange(len(rows))
  k_L, n_L = kind[rows], nxt[rows]
  inner_L = ((k_L == INNER) | (k_L == COUNT)) & (n_L >= 0)
  # Fewest bytes from a loop state back to its hub (inner edges stay in its loop).
  dm_L = automaton.distances_to_accept(
      np.where(inner_L, pos[np.maximum(n_L, 0)], -1).astype(np.int32), hub[rows])
  dm_L = np.where(dm_L >= 0, dm_L, INF)
  # m per hub: its shortest character (1 + the way back from the edge's target).
  m_L = np.where(inner_L, 1 + dm_L[pos[np.maximum(n_L, 0)]], INF).min(axis=1)
  hub_R = np.full(len(cdfa.lo_R), -1, np.int64)
  hub_R[loop[hub]] = np.flatnonzero(hub)
  my_hub = np.where(loop >= 0, hub_R[np.maximum(loop, 0)], -1)
  m = np.zeros(S, np.int64)
  in_loop = my_hub >= 0
  m[in_loop] = np.minimum(m_L[pos[my_hub[in_loop]]], INF)
  lom = np.minimum(lo * m, INF)  # Entering a hub: lo characters before it is left.
  # Fewest bytes to acceptance from the states outside loops and from each hub once
  # its count is met, by one breadth-first search: an edge into a hub goes
  # through a chain of lo x m extra states first (its entering cost), and the
  # edges inside loops are left out.
  chain = np.where(hub & (lom < INF), lom, 0)
  first = S + np.cumsum(chain) - chain
  n_ext = S + int(chain.sum())
  entry = np.where(~hub | (lom >= INF), -1, np.where(chain > 0, first, np.arange(S)))
  to_hub = (nxt >= 0) & hub[np.maximum(nxt, 0)]
  table = np.full((n_ext, C), -1, np.int32)
  table[:S] = np.where(to_hub, entry[np.maximum(nxt, 0)], nxt)
  table[rows] = np.where(inner_L, -1, table[rows])
  if n_ext > S:
    h_E = np.repeat(np.arange(S), chain)  # Each chain state's hub.
    step_E = np.arange(n_ext - S) - (first - S)[h_E]
    table[S:, 0] = np.where(step_E + 1 < chain[h_E], np.arange(S + 1, n_ext + 1), h_E)
  acc = np.zeros(n_ext, bool)
  acc[:S] = cdfa.accepting & ((sk == _OUT) | hub)
  g = automaton.distances_to_accept(table, acc)[:S]
  g = np.where(g >= 0, g, INF)
  g_hub = np.where(in_loop, g[np.maximum(my_hub, 0)], INF)
  dm = np.zeros(S, np.int64)
  dm[rows] = dm_L
  base = np.where(sk == _OUT, g, np.where(hub, lom + g, np.where(
      sk == _MID, dm + lom + g_hub, INF)))
  return np.minimum(base, INF), m


@flax.struct.dataclass
class CountedIndex:
  """Token tables over byte classes with a loop counter (a pytree: pass it to
  jitted code). A state is the pair (automaton state, counter): host-side a
  tuple of ints, in-graph a tuple of int32[B] arrays. Same interface as
  `constraints.TokenIndex` (`start_state`, `need_row`, `step`, `init_state`,
  `need_rows`, `advance`)."""
  next_SxK: Any   # int32: target (-1: rejected); the EOS column keeps s
  need_SxK: Any   # int32: base need after the edge (INF: rejected)
  kind_SxK: Any   # int8: PLAIN / INNER / COUNT / LEAVE / EOS
  col_V: Any      # intp[V]: each token's column
  hub_S: Any      # bool: a loop's hub
  lo_S: Any       # int32: its loop's lo (0 outside loops)
  hi_S: Any       # int32: its loop's hi (INF: unbounded or outside loops)
  cap_S: Any      # int32: the counter's largest value in its loop
  m_S: Any        # int32: the fewest bytes of one character of its loop
  start: int = flax.struct.field(pytree_node=False, default=0)
  eos_id: int = flax.struct.field(pytree_node=False, default=0)
  min_tokens: int = flax.struct.field(pytree_node=False, default=0)
  warnings: tuple[str, ...] = flax.struct.field(pytree_node=False, default=())

  @property
  def n_states(self) -> int:
    return self.next_SxK.shape[0]

  @property
  def vocab_size(self) -> int:
    return self.col_V.shape[0]

  # --- in-graph (jnp; state: (s_B, c_B)) ---------------------------------------------
  def init_state(self, batch: int):
    return (jnp.full((batch,), self.start, jnp.int32), jnp.zeros((batch,), jnp.int32))

  def need_rows(self, state_B) -> Any:
    """int32[B, V]: fewest tokens after each token to acceptance (INF: rejected)."""
    s_B, c_B = state_B
    return jnp.take(_need_BxK(jnp, self, s_B, c_B), self.col_V, axis=1)

  def advance(self, state_B, token_B):
    s_B, c_B = state_B
    return _advance(jnp, self, s_B, c_B, token_B)

  # --- host (numpy; state: (s, c)) ---------------------------------------------------
  @property
  def start_state(self) -> tuple[int, int]:
    return (self.start, 0)

  def need_row(self, state) -> np.ndarray:
    """int[V]: `need_rows` of one state, on the host (scalar counter rules)."""
    s, c = state
    col_V, need = self.col_V, self.need_SxK[s]
    if not self.m_S[s] and not self.hub_S[s]:  # Outside loops: no counter.
      return need[col_V]
    hub, m = bool(self.hub_S[s]), int(self.m_S[s])
    lo, hi = int(self.lo_S[s]), int(self.hi_S[s])
    kind = np.asarray(self.kind_SxK[s])
    need = need.astype(np.int64)
    count = kind == COUNT
    inner = count | (kind == INNER)
    need[inner & (need < INF)] -= m * min(c + 1, lo)
    if c >= hi:
      need[inner if hub else count] = INF
    if hub and c < lo:
      need[(kind == LEAVE) | (kind == EOS)] = INF
    return need[col_V]

  def step(self, state, token: int) -> tuple[int, int]:
    """The state after `token`, which must be one `need_row(state)` allows (a
    rejected token gives a meaningless state, as `TokenIndex.step`'s table does:
    callers step only on tokens their mask allowed)."""
    s, c = state
    k = int(self.col_V[token])
    t, e = int(self.next_SxK[s, k]), int(self.kind_SxK[s, k])
    c2 = c if e in (INNER, EOS) else min(c + 1, int(self.cap_S[s])) if e == COUNT else 0
    return t, c2

  def allowed(self, state) -> np.ndarray:
    return self.need_row(state) < INF

  def accepts(self, tokens) -> bool:
    """Whether `tokens` (up to an optional EOS) spell a match, token by token."""
    state = self.start_state
    for t in tokens:
      need = self.need_row(state)
      if t == self.eos_id:
        return bool(need[t] == 0)
      if need[t] >= INF:
        return False
      state = self.step(state, t)
    return bool(self.need_row(state)[self.eos_id] == 0)


def _need_BxK(xp, idx: CountedIndex, s_B, c_B):
  need = idx.need_SxK[s_B]
  kind = idx.kind_SxK[s_B]
  hub, lo = idx.hub_S[s_B][:, None], idx.lo_S[s_B][:, None]
  hi, m = idx.hi_S[s_B][:, None], idx.m_S[s_B][:, None]
  c = c_B[:, None]
  inner = (kind == INNER) | (kind == COUNT)
  need = xp.where(inner & (need < INF), need - m * xp.minimum(c + 1, lo), need)
  bad = xp.where(inner, ((kind == COUNT) | hub) & (c >= hi),
                 ((kind == LEAVE) | (kind == EOS)) & hub & (c < lo))
  return xp.where(bad, INF, need)


def _advance(xp, idx: CountedIndex, s_B, c_B, token_B):
  k_B = idx.col_V[token_B]
  t_B, e_B = idx.next_SxK[s_B, k_B], idx.kind_SxK[s_B, k_B]
  c2_B = xp.where((e_B == INNER) | (e_B == EOS), c_B,
                  xp.where(e_B == COUNT, xp.minimum(c_B + 1, idx.cap_S[s_B]), 0))
  return t_B, c2_B.astype(c_B.dtype)


_BYTES = [bytes([i]) for i in range(256)]


def byte_tokens(vocab) -> np.ndarray | None:
  """int64[T] the byte of each one-byte token (-1: special), or None unless every
  text token is one byte and every byte is a token."""
  out = np.full(len(vocab), -1, np.int64)
  if vocab[:256] == _BYTES and all(v is None for v in vocab[256:]):  # The byte tokenizer's.
    out[:256] = np.arange(256)
    return out
  for i, v in enumerate(vocab):
    if v is None:
      continue
    if len(v) != 1:
      return None
    out[i] = v[0]
  if len(np.unique(out[out >= 0])) != 256:
    return None
  return out


def build(dfa: automaton.Dfa | automaton.CountedDfa, byte_T: np.ndarray, *, eos_id: int,
          vocab_size: int, state_multiple: int = 64, column_multiple: int = 64
          ) -> CountedIndex:
  """The CountedIndex of `dfa` for a vocabulary of one-byte tokens (`byte_tokens`).

  Rows are padded to a multiple of `state_multiple` and columns to one of
  `column_multiple`, so schemas of similar size share one compiled sampler.
  Raises ValueError when no token sequence spells a match.
  """
  cdfa = dfa if isinstance(dfa, automaton.CountedDfa) else _plain(dfa)
  nxt, kind, sk, loop = _edges(cdfa)
  lo, hi, cap = _loop_params(cdfa, loop)
  base, m = _bases(cdfa, nxt, kind, sk, loop, lo)
  S, C = nxt.shape
  if sk[0] not in (_OUT, _HUB) or base[0] >= INF:
    raise ValueError('build_index: no token sequence of this vocabulary spells a match')
  S_pad = -(-S // state_multiple) * state_multiple
  K = -(-(C + 2) // column_multiple) * column_multiple
  cls_K = np.minimum(np.arange(K), C)  # Columns past the classes: never allowed.
  if dfa_native.LIB is not None:
    next_SxK, need_SxK = dfa_native.token_tables(nxt, base, cls_K, S_pad, INF)
  else:
    need_SxC = np.append(base, INF)[nxt]  # (-1 reads the appended INF.)
    next_SxK = np.full((S_pad, K), -1, np.int32)
    need_SxK = np.full((S_pad, K), INF, np.int32)
    next_SxK[:S, :C] = np.where(need_SxC < INF, nxt, -1)
    need_SxK[:S, :C] = need_SxC
  kind_SxK = np.zeros((S_pad, K), np.int8)
  if len(cdfa.lo_R):
    kind_SxK[:S, :C] = kind
  acc = cdfa.accepting & ((sk == _OUT) | (sk == _HUB))
  next_SxK[:S, C + 1] = np.where(acc, np.arange(S), -1)
  need_SxK[:S, C + 1] = np.where(acc, 0, INF)
  kind_SxK[:, C + 1] = EOS
  # (intp: the host gathers rows with it, 4x faster than with int32 indices.)
  col_V = np.full(vocab_size, C, np.intp)  # Specials: column C, never allowed.
  text = byte_T >= 0
  col_V[:len(byte_T)][text] = cdfa.byte_class[byte_T[text]]
  col_V[eos_id] = C + 1

  def per_state(x, fill):
    out = np.full(S_pad, fill, np.int32)
    out[:S] = x
    return out

  return CountedIndex(next_SxK=next_SxK, need_SxK=need_SxK, kind_SxK=kind_SxK, col_V=col_V,
                      hub_S=np.pad(sk == _HUB, (0, S_pad - S)),
                      lo_S=per_state(lo, 0), hi_S=per_state(hi, INF),
                      cap_S=per_state(cap, 0), m_S=per_state(m, 0),
                      start=0, eos_id=eos_id, min_tokens=int(base[0]))

"""Continuous batching: concurrent requests decode together in a fixed set of slots.

Shape legend: N decode slots, S cache positions (model.max_len), P prompt bucket,
V vocabulary (logits width), K top logprobs kept per token (`TOP_K`).

One KV cache holds N rows ("slots"). A new sequence is prefilled alone (its prompt,
BOS included and the last token held back, right-padded to a power-of-two bucket so
few shapes compile; the cache's per-row write index is then set to the true length,
so the padding is never attended to) and copied into a free slot. Each engine step
feeds every slot's last token through the model once, samples one token per slot
(its own temperature, top-p, seed and allowed-token mask) and returns, per slot, the
token, its log-probability under the model's log-softmax and the `K` most likely
tokens. Sequences join and leave between steps (Orca-style iteration-level
scheduling, Yu et al. OSDI 2022), so a long request never holds a short one back.
Active sequences occupy slots 0..k-1 (a finished one's slot is filled by moving
the last one down), and a step runs only the first R rows, R the smallest power of
two >= k (or N): a lone request does not pay for N rows.

The compiled shapes are one prefill per prompt bucket, one slot copy, one slot
move and one step per row bucket, all compiled at start by `warmup()`. Grammar constraints
(`lattice.decode.constraints.Index`) are applied on the host: each step gets an
N x V mask, a token allowed when its remaining need fits in the sequence's token
budget (the rule `lattice.decode.sampling.generate` applies in-graph), so requests
with different schemas share a step. Sampling keys depend only on (seed, choice,
step), so a seeded request gives the same tokens whatever else is being served.
"""

from __future__ import annotations

import dataclasses
import functools
import queue
import threading
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lattice import config as config_lib
from lattice import model as model_lib
from lattice.decode import constraints as constraints_lib
from lattice.decode import packed_weights
from lattice.nn import transformer

TOP_K = 20  # OpenAI's largest top_logprobs
MIN_BUCKET = 16


@dataclasses.dataclass
class Token:
  """One generated (or echoed prompt) token with its log-probabilities."""
  id: int
  logprob: float
  top_ids: np.ndarray      # int32[K], most likely first
  top_logprobs: np.ndarray  # float32[K]


@dataclasses.dataclass
class Sequence:
  """One choice being decoded; `on_token(seq, token)` is called on the engine thread
  after every token, `on_done(seq, error)` once at the end."""
  prompt_ids: np.ndarray   # int32[L]: BOS + prompt tokens
  max_tokens: int
  temperature: float = 1.0
  top_p: float = 1.0
  seed: int = 0
  choice: int = 0
  constraint: constraints_lib.Index | None = None
  on_token: Callable[[Sequence, Token], None] = lambda seq, tok: None
  on_done: Callable[[Sequence, Exception | None], None] = lambda seq, err: None
  # Host-side hook before each step: (seq, tokens left after this one) -> bool[V]
  # allowed or None; it may also switch the constraint (lattice.serve.tools), and
  # keeps its per-sequence progress in `hook_state`.
  mask_hook: Callable[[Sequence, int], np.ndarray | None] | None = None
  hook_state: Any = None
  # Filled in by the engine / the caller's on_token.
  tokens: list[int] = dataclasses.field(default_factory=list)
  cstate: Any = 0  # the constraint's state (a pair for a `counted.CountedIndex`)
  finished: bool = False
  prompt_tokens: list[Token] | None = None  # with want_prompt_logprobs
  want_prompt_logprobs: bool = False

  def set_constraint(self, index: constraints_lib.Index | None) -> None:
    self.constraint, self.cstate = index, (index.start_state if index is not None else 0)


def bucket(n: int, limit: int) -> int:
  """Smallest power of two >= n (at least MIN_BUCKET), capped at `limit`."""
  return min(max(MIN_BUCKET, 1 << max(n - 1, 0).bit_length()), limit)


def _batch_axes(model) -> Any:
  """Per cache leaf, the axis that holds the batch (scanned layers stack in front)."""
  a = jax.eval_shape(lambda: transformer.init_cache(model, 2))
  b = jax.eval_shape(lambda: transformer.init_cache(model, 3))
  return jax.tree.map(lambda x, y: next(i for i, (p, q) in enumerate(zip(x.shape, y.shape))
                                        if p != q), a, b)


def _is_index(path) -> bool:
  return getattr(path[-1], 'key', None) == 'cache_index'


def _pick(logits_NxV, allowed_NxV, temp_N, top_p_N, seed_N, choice_N, step_N):
  """Samples one token per row; returns (token_N, logprob_N, top_logprob_NxK, top_id_NxK).

  Logprobs are the model's own log-softmax (before temperature, top-p and masks),
  as OpenAI and vLLM report them.
  """
  logits_NxV = logits_NxV.astype(jnp.float32)
  lp_NxV = jax.nn.log_softmax(logits_NxV, axis=-1)
  masked_NxV = jnp.where(allowed_NxV, logits_NxV, -jnp.inf)
  greedy_N = jnp.argmax(masked_NxV, axis=-1)
  scaled_NxV = masked_NxV / jnp.maximum(temp_N, 1e-6)[:, None]
  # Top-p (Holtzman et al. 2020): keep the smallest prefix of the sorted
  # distribution whose mass reaches top_p (at least one token).
  sorted_NxV = jnp.sort(scaled_NxV, axis=-1)[:, ::-1]
  probs_NxV = jax.nn.softmax(sorted_NxV, axis=-1)
  n_keep_N = jnp.sum(jnp.cumsum(probs_NxV, axis=-1) - probs_NxV < top_p_N[:, None], -1)
  cutoff_Nx1 = jnp.take_along_axis(sorted_NxV, jnp.maximum(n_keep_N, 1)[:, None] - 1, -1)
  scaled_NxV = jnp.where(scaled_NxV < cutoff_Nx1, -jnp.inf, scaled_NxV)

  def key(seed, choice, step):
    return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), choice), step)

  keys_N = jax.vmap(key)(seed_N, choice_N, step_N)
  sampled_N = jax.vmap(lambda k, l: jax.random.categorical(k, l))(keys_N, scaled_NxV)
  token_N = jnp.where(temp_N == 0, greedy_N, sampled_N).astype(jnp.int32)
  token_lp_N = jnp.take_along_axis(lp_NxV, token_N[:, None], -1)[:, 0]
  top_lp_NxK, top_id_NxK = jax.lax.top_k(lp_NxV, TOP_K)
  return token_N, token_lp_N, top_lp_NxK, top_id_NxK


class Engine:
  """Serves one model: `submit(seq)` from any thread; a daemon thread decodes.

  `slots` is how many sequences decode at once (1 serves one at a time). Raises
  ConfigError if the model's vocabulary is smaller than `TOP_K`.
  """

  def __init__(self, variables: dict, model_cfg: config_lib.ModelConfig, *,
               slots: int = 8, eos_id: int, pad_id: int):
    if model_cfg.vocab_size < TOP_K:
      raise config_lib.ConfigError(f'model.vocab_size: serving needs >= {TOP_K} tokens')
    if slots < 1:
      raise config_lib.ConfigError(f'--slots: expected a positive integer, got {slots}')
    self.model_cfg, self.slots = model_cfg, slots
    self.eos_id, self.pad_id = eos_id, pad_id
    self.max_len, self.vocab = model_cfg.max_len, model_cfg.vocab_size
    self.model = model_lib.make_model(model_cfg, True)
    # Decode steps (<= 8 rows on CPU) read packed copies of the projection kernels,
    # made once here (lattice.decode.packed_weights; the same bits, a forward stream).
    self.variables = packed_weights.pack_weights(
        {k: v for k, v in variables.items() if k not in ('cache', 'intermediates')},
        model_cfg)
    axes = _batch_axes(self.model)
    self._cache = transformer.init_cache(self.model, slots)
    self._prefill = jax.jit(self._prefill_fn)
    self._insert = jax.jit(functools.partial(self._insert_fn, axes), donate_argnums=0)
    self._move = jax.jit(functools.partial(self._move_fn, axes), donate_argnums=0)
    self._step = jax.jit(functools.partial(self._step_fn, axes), donate_argnums=1,
                         static_argnames='rows')
    self._queue: queue.Queue[Sequence | None] = queue.Queue()
    # Active sequences fill slots 0..k-1 (compacted when one finishes), so a step
    # runs only the first rows_for(k) rows.
    self._active: list[Sequence] = []
    self._last = np.full((slots,), pad_id, np.int32)
    self._thread = threading.Thread(target=self._loop, daemon=True, name='lattice-engine')
    self._lock = threading.Lock()
    self._started = False
    self.steps = 0  # decode steps run (for benchmarks)

  # --- jitted pieces --------------------------------------------------------------

  def _prefill_fn(self, variables, tokens_1xP, length):
    """KV cache of the first `length` tokens (index set to `length`) and the
    log-softmax top-K at each position (for echo logprobs)."""
    cache = transformer.init_cache(self.model, 1)
    logits_1xPxV, mut = self.model.apply({**variables, 'cache': cache}, tokens_1xP,
                                         mutable=['cache'])
    cache = jax.tree_util.tree_map_with_path(
        lambda p, v: jnp.full_like(v, length) if _is_index(p) else v, mut['cache'])
    lp_PxV = jax.nn.log_softmax(logits_1xPxV[0].astype(jnp.float32), axis=-1)
    next_P = jnp.concatenate([tokens_1xP[0, 1:], tokens_1xP[0, :1]])
    token_lp_P = jnp.take_along_axis(lp_PxV, next_P[:, None], -1)[:, 0]
    top_lp_PxK, top_id_PxK = jax.lax.top_k(lp_PxV, TOP_K)
    return cache, token_lp_P, top_lp_PxK, top_id_PxK

  @staticmethod
  def _insert_fn(axes, cache, row, slot):
    return jax.tree.map(
        lambda big, small, ax: jax.lax.dynamic_update_slice_in_dim(big, small, slot, ax),
        cache, row, axes)

  @staticmethod
  def _move_fn(axes, cache, src, dst):
    """The cache with slot `src` copied into slot `dst`."""
    return jax.tree.map(lambda c, ax: jax.lax.dynamic_update_slice_in_dim(
        c, jax.lax.dynamic_slice_in_dim(c, src, 1, ax), dst, ax), cache, axes)

  def _step_fn(self, axes, variables, cache, token_R, allowed_RxV, temp_R, top_p_R,
               seed_R, choice_R, step_R, *, rows):
    """One token for the first `rows` slots (R = rows); the other slots untouched."""
    head = jax.tree.map(lambda c, ax: jax.lax.slice_in_dim(c, 0, rows, axis=ax),
                        cache, axes)
    logits_Rx1xV, mut = self.model.apply({**variables, 'cache': head}, token_R[:, None],
                                         mutable=['cache'])
    cache = jax.tree.map(lambda c, h, ax: jax.lax.dynamic_update_slice_in_dim(c, h, 0, ax),
                         cache, mut['cache'], axes)
    return (cache,) + _pick(logits_Rx1xV[:, -1], allowed_RxV, temp_R, top_p_R, seed_R,
                            choice_R, step_R)

  # --- public API -----------------------------------------------------------------

  def buckets(self) -> list[int]:
    """The prompt-length buckets prefill compiles for (powers of two, capped)."""
    out, b = [], MIN_BUCKET
    while True:
      out.append(min(b, self.max_len))
      if b >= self.max_len:
        return out
      b *= 2

  def row_buckets(self) -> list[int]:
    """The batch sizes a step compiles for: powers of two below `slots`, and it."""
    return sorted({min(1 << i, self.slots) for i in range(self.slots.bit_length() + 1)})

  def rows_for(self, k: int) -> int:
    """The row bucket a step over k active sequences runs."""
    return next(r for r in self.row_buckets() if r >= k)

  def warmup(self) -> None:
    """Compiles every shape the engine will use (each prompt bucket's prefill, the
    slot copy and move, each row bucket's step) so no request waits for XLA."""
    if self._started:
      raise RuntimeError('Engine.warmup: call it before the engine starts serving')
    for P in self.buckets():
      row = self._prefill(self.variables, jnp.zeros((1, P), jnp.int32), 1)[0]
    self._cache = self._insert(self._cache, row, 0)
    self._cache = self._move(self._cache, 0, 0)
    for R in self.row_buckets():
      self._run_step(R, np.ones((R, self.vocab), bool), np.zeros(R, np.float32),
                     np.ones(R, np.float32), *(np.zeros(R, np.int32) for _ in range(3)))

  def start(self) -> Engine:
    """Starts the decode thread (idempotent); `submit` calls it too."""
    with self._lock:
      if not self._started:
        self._thread.start()
        self._started = True
    return self

  def stop(self) -> None:
    """Ends the decode thread after the sequences in flight get no more steps."""
    self._queue.put(None)

  def room(self, n_prompt: int) -> int:
    """How many new tokens fit after a prompt of `n_prompt` tokens (BOS included)."""
    return self.max_len - n_prompt

  def submit(self, seq: Sequence) -> None:
    """Queues `seq`; raises ValueError if it cannot fit the KV cache."""
    if len(seq.prompt_ids) < 1 or seq.max_tokens < 0:
      raise ValueError('submit: a sequence needs a prompt (BOS at least) and '
                       'max_tokens >= 0')
    if len(seq.prompt_ids) + seq.max_tokens > self.max_len:
      raise ValueError(f'max_tokens: prompt ({len(seq.prompt_ids)} tokens) + '
                       f'max_tokens ({seq.max_tokens}) exceed max_len {self.max_len}')
    self.start()
    self._queue.put(seq)

  # --- the decode loop ------------------------------------------------------------

  def _run_step(self, rows, allowed, temp, top_p, seed, choice, step):
    out = self._step(self.variables, self._cache, self._last[:rows], allowed,
                     temp, top_p, seed, choice, step, rows=rows)
    self._cache = out[0]
    self.steps += 1
    return jax.device_get(out[1:])

  def _prefill_padded(self, ids: np.ndarray, L: int):
    P = bucket(max(L, 1), self.max_len)
    tokens = np.full((1, P), self.pad_id, np.int32)
    tokens[0, :L] = ids[:L]
    return self._prefill(self.variables, tokens, L)

  def _admit(self, seq: Sequence, slot: int | None) -> None:
    """Prefills `seq` into `slot` (None: only its prompt logprobs, max_tokens 0)."""
    ids = np.asarray(seq.prompt_ids, np.int32)
    if seq.want_prompt_logprobs:
      # Position j predicts token j + 1: every prompt token after BOS is scored.
      _, lp_P, top_lp, top_id = jax.device_get(self._prefill_padded(ids, len(ids)))
      seq.prompt_tokens = [Token(int(ids[j + 1]), float(lp_P[j]), top_id[j], top_lp[j])
                           for j in range(len(ids) - 1)]
    if slot is None:
      return
    # The last prompt token is held back: the first step feeds it.
    row = self._prefill_padded(ids, len(ids) - 1)[0]
    self._cache = self._insert(self._cache, row, slot)
    self._last[slot] = ids[-1]
    self._active.append(seq)

  def _mask(self, seq: Sequence) -> np.ndarray | None:
    """bool[V] allowed next tokens (None: all): the hook's, and the constraint's
    tokens whose need fits the budget left after them."""
    left = seq.max_tokens - 1 - len(seq.tokens)
    allowed = seq.mask_hook(seq, left) if seq.mask_hook is not None else None
    if seq.constraint is not None:
      fits = seq.constraint.need_row(seq.cstate) <= left
      allowed = fits if allowed is None else allowed & fits
    return allowed

  def _loop(self) -> None:
    while True:
      block = not self._active
      while len(self._active) < self.slots:
        try:
          seq = self._queue.get(block=block)
        except queue.Empty:
          break
        if seq is None:
          return
        block = False
        slot = len(self._active) if seq.max_tokens > 0 else None
        try:
          self._admit(seq, slot)
          if slot is None:
            seq.finished = True
            seq.on_done(seq, None)
        except Exception as e:  # pylint: disable=broad-except
          seq.finished = True
          seq.on_done(seq, e)
      if not self._active:
        continue
      try:
        self._decode_once()
      except Exception as e:  # pylint: disable=broad-except
        # A failed step fails the sequences in it, not the server.
        failed, self._active = self._active, []
        for seq in failed:
          seq.finished = True
          seq.on_done(seq, e)

  def _decode_once(self) -> None:
    k = len(self._active)
    R = self.rows_for(k)
    temp, top_p = np.zeros(R, np.float32), np.ones(R, np.float32)
    seed, choice, step = (np.zeros(R, np.int32) for _ in range(3))
    allowed = np.ones((R, self.vocab), bool)
    for i, seq in enumerate(self._active):
      temp[i], top_p[i] = seq.temperature, seq.top_p
      seed[i], choice[i], step[i] = seq.seed, seq.choice, len(seq.tokens)
      mask = self._mask(seq)
      if mask is not None:
        allowed[i] = mask
    token_R, lp_R, top_lp_RxK, top_id_RxK = self._run_step(R, allowed, temp, top_p,
                                                           seed, choice, step)
    for i, seq in enumerate(self._active):
      tok = Token(int(token_R[i]), float(lp_R[i]), top_id_RxK[i], top_lp_RxK[i])
      seq.tokens.append(tok.id)
      if seq.constraint is not None and tok.id != self.eos_id:
        seq.cstate = seq.constraint.step(seq.cstate, tok.id)
      self._last[i] = tok.id
      seq.on_token(seq, tok)
      if tok.id == self.eos_id or len(seq.tokens) >= seq.max_tokens:
        seq.finished = True
    self._compact()

  def _compact(self) -> None:
    """Drops finished sequences and moves the rest down to slots 0..k'-1 (a source
    slot is never below its destination, so moving in order is safe)."""
    kept = []
    for i, seq in enumerate(self._active):
      if seq.finished:
        seq.on_done(seq, None)
        continue
      j = len(kept)
      if i != j:
        self._cache = self._move(self._cache, i, j)
        self._last[j] = self._last[i]
      kept.append(seq)
    self._active = kept

"""Self-speculative decoding with a model's own multi-token heads, under jit.

Shape legend: B batch, P prompt length, N new tokens, K draft tokens per step,
L = K + 1 tokens per verification forward, V vocabulary.

Blockwise parallel decoding (Stern et al. 2018) as used by Gloeckle et al. 2024
(arXiv 2404.19737, §3.2) and DeepSeek-V3 (arXiv 2412.19437, §5.4.3): the model's
extra heads (parallel heads, or sequential MTP modules) draft the K tokens after
the next one; ONE forward of the model over [current token, K drafts] then verifies
them: the main head's choice at each position is compared with the next draft, the
longest matching prefix is accepted, and the main head's own token at the first
mismatch (or after the last draft) is emitted too, so every forward emits 1..K+1
tokens. The same forward's extra heads at the last accepted position draft the next
block. The loop carries one write index per row outside the layer tree
(`split_index`): accepting a + 1 tokens moves it by a + 1, and the rejected drafts'
cache entries past it are masked by attention and overwritten by the next forward.

- greedy (temperature 0): the output is identical to plain greedy decoding;
- sampling: drafts are sampled from the heads' distributions q and accepted with the
  speculative-sampling rule (Leviathan et al. 2023; Chen et al. 2023): accept d with
  probability min(1, p(d)/q(d)), else emit a sample of norm(max(p - q, 0)); the
  emitted tokens are distributed exactly as sampling from the main model's p (with the
  same temperature / top-k / top-p).

The model's output heads draft (`lattice.model.Model.spec_forward`);
`generate_plain` decodes the same model one token per forward, for comparison.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from lattice import config as config_lib
from lattice import model as model_lib
from lattice.decode import packed_weights
from lattice.decode.packed_weights import PACKED
from lattice.decode.sampling import SamplingConfig, filtered_logits, sample_logits
from lattice.nn import transformer


def n_drafts(model_cfg: config_lib.ModelConfig) -> int:
  """Draft tokens per step: the extra parallel heads, or the sequential depth."""
  k = model_lib.n_drafts(model_cfg)
  if k < 1:
    raise config_lib.ConfigError(
        f'model.mtp.kind: self-speculative decoding needs draft heads (parallel with '
        f'n >= 2, or sequential), got kind={model_cfg.mtp.kind!r} n={model_cfg.mtp.n}')
  return k


def _is_index(path) -> bool:
  return getattr(path[-1], 'key', None) == 'cache_index'


def cache_index(cache: Any) -> jax.Array:
  """int32[B]: the write index every layer shares (scanned layers stack it)."""
  leaf = next(v for p, v in jax.tree_util.tree_flatten_with_path(cache)[0] if _is_index(p))
  return leaf.reshape(-1, leaf.shape[-1])[0]


def split_index(cache: Any) -> tuple[list[jax.Array], Any]:
  """(the cache's key/value leaves, with_index(kv, index_B) -> the full cache).

  The decoding loop carries one write index per row outside the layer tree and
  hands it to every layer when it rebuilds the cache for a forward, so accepting or
  rolling back drafts is index arithmetic: no per-layer index rewrite, and the
  layers' own `index + L` updates are dead code.
  """
  flat, treedef = jax.tree_util.tree_flatten_with_path(cache)
  index_at = [_is_index(p) for p, _ in flat]
  kv = [v for (_, v), i in zip(flat, index_at) if not i]
  shapes = [v.shape for _, v in flat]

  def with_index(kv: list[jax.Array], index_B: jax.Array) -> Any:
    it = iter(kv)
    return treedef.unflatten([jnp.broadcast_to(index_B, shape) if i else next(it)
                              for i, shape in zip(index_at, shapes)])
  return kv, with_index


def kv_leaves(cache: Any) -> list[jax.Array]:
  """The key/value leaves of a cache (its index leaves dropped), as `split_index`."""
  return [v for p, v in jax.tree_util.tree_flatten_with_path(cache)[0] if not _is_index(p)]


def rollback(cache: Any, index_B: jax.Array) -> Any:
  """The cache with every layer's write index set to `index_B` (per row).

  Entries at or past the index stay in memory but are masked out by attention and
  overwritten by the next write, so this is all a rollback needs.
  """
  return jax.tree_util.tree_map_with_path(
      lambda p, v: jnp.broadcast_to(index_B, v.shape).astype(v.dtype) if _is_index(p) else v,
      cache)


def _decode_setup(variables, model_cfg, B, total):
  if total > model_cfg.max_len:
    raise config_lib.ConfigError(
        f'model.max_len: {total} positions needed (prompt + new tokens + drafts) exceed '
        f'the KV cache of {model_cfg.max_len}')
  model = model_lib.make_model(model_cfg, decode=True)
  variables = {k: v for k, v in variables.items() if k not in ('cache', 'intermediates')}
  return model, variables, transformer.init_cache(model, B)


def _stop_after_eos(out_BxN: jax.Array, eos_id: int | None, pad_id: int) -> jax.Array:
  """PAD after each row's first EOS (EOS itself kept), as sampling.generate does."""
  if eos_id is None:
    return out_BxN
  after = jnp.cumsum(out_BxN == eos_id, axis=1) - (out_BxN == eos_id) > 0
  return jnp.where(after, pad_id, out_BxN)


@functools.partial(jax.jit, static_argnames=('model_cfg', 'max_new_tokens', 'sampling',
                                             'eos_id', 'pad_id'))
def generate_plain(variables: dict, prompt_BxP: jax.Array, key: jax.Array, *,
                   model_cfg: config_lib.ModelConfig, max_new_tokens: int,
                   sampling: SamplingConfig = SamplingConfig(0.0),
                   eos_id: int | None = None, pad_id: int = 0) -> jax.Array:
  """One token per forward with the config's model (the baseline); int32[B, N]."""
  B, P = prompt_BxP.shape
  model, variables, cache = _decode_setup(variables, model_cfg, B, P + max_new_tokens)
  logits_BxPxV, mut = model.apply({**variables, 'cache': cache}, prompt_BxP,
                                  mutable=['cache'])
  keys = jax.random.split(key, max_new_tokens)
  first_B = sample_logits(keys[0], logits_BxPxV[:, -1], sampling)

  def body(carry, key):
    cache, token_B = carry
    logits_Bx1xV, mut = model.apply({**variables, 'cache': cache}, token_B[:, None],
                                    mutable=['cache'])
    token_B = sample_logits(key, logits_Bx1xV[:, -1], sampling)
    return (mut['cache'], token_B), token_B

  _, rest_NxB = jax.lax.scan(body, (mut['cache'], first_B), keys[1:])
  out_BxN = jnp.concatenate([first_B[:, None], rest_NxB.T], axis=1)
  return _stop_after_eos(out_BxN, eos_id, pad_id)


def _draw(key, logits_BxKxV, s: SamplingConfig):
  """Drafts and the distributions q they were drawn from."""
  if s.temperature == 0.0:
    return (jnp.argmax(logits_BxKxV, -1).astype(jnp.int32),
            jnp.zeros(logits_BxKxV.shape, jnp.float32))
  logits = filtered_logits(logits_BxKxV, s)
  return (jax.random.categorical(key, logits, axis=-1).astype(jnp.int32),
          jax.nn.softmax(logits, axis=-1))


def _verify(key, main_BxLxV, drafts_BxK, q_BxKxV, s: SamplingConfig):
  """(token emitted if the block stopped at each position [B, L], accepted [B, K])."""
  K = drafts_BxK.shape[1]
  if s.temperature == 0.0:
    g_BxL = jnp.argmax(main_BxLxV, axis=-1).astype(jnp.int32)
    return g_BxL, drafts_BxK == g_BxL[:, :K]
  k_u, k_r, k_last = jax.random.split(key, 3)
  p_BxLxV = jax.nn.softmax(filtered_logits(main_BxLxV, s), axis=-1)
  p_BxKxV = p_BxLxV[:, :K]
  pick = lambda x, t: jnp.take_along_axis(x, t[..., None], axis=-1)[..., 0]
  p_d, q_d = pick(p_BxKxV, drafts_BxK), pick(q_BxKxV, drafts_BxK)
  accept_BxK = jax.random.uniform(k_u, drafts_BxK.shape) * q_d < p_d
  resid_BxKxV = jnp.maximum(p_BxKxV - q_BxKxV, 0.0)
  mass_BxK = jnp.sum(resid_BxKxV, axis=-1, keepdims=True)
  resid_BxKxV = jnp.where(mass_BxK > 0, resid_BxKxV / jnp.maximum(mass_BxK, 1e-30),
                          p_BxKxV)
  fix_BxK = jax.random.categorical(k_r, jnp.log(resid_BxKxV), axis=-1).astype(jnp.int32)
  last_B = jax.random.categorical(k_last, jnp.log(p_BxLxV[:, K]), axis=-1)
  tok_BxL = jnp.concatenate([jnp.where(accept_BxK, drafts_BxK, fix_BxK),
                             last_B[:, None].astype(jnp.int32)], axis=1)
  return tok_BxL, accept_BxK


def _at(x_BxLx_: jax.Array, pos_B: jax.Array) -> jax.Array:
  """x[b, pos_B[b]] for every row b: [B, L, ...] -> [B, ...]."""
  B = x_BxLx_.shape[0]
  if B == 1:  # a dynamic slice, not a gather (XLA:CPU runs a gather op by op)
    return jax.lax.dynamic_index_in_dim(x_BxLx_, pos_B[0], axis=1, keepdims=False)
  return jnp.take_along_axis(x_BxLx_, pos_B.reshape((B,) + (1,) * (x_BxLx_.ndim - 1)),
                             axis=1)[:, 0]


def _generic_forward(model, variables, cache):
  """(kv, forward(kv, index_B, tokens, choose, at) -> (main, chosen, drafts, kv)).

  Every output head runs through `spec_forward`; `kv` is the cache's key/value
  leaves, the write index is rebuilt from `index_B` for each forward. `at(chosen)`
  is the position [B] whose draft logits [B, K, V] are returned.
  """
  kv, with_index = split_index(cache)

  def forward(kv, index_B, tokens_BxL, choose, at):
    (main, chosen, drafts_BxLxKxV), mut = model.apply(
        {**variables, 'cache': with_index(kv, index_B)}, tokens_BxL, choose,
        method='spec_forward', mutable=['cache'])
    return main, chosen, _at(drafts_BxLxKxV, at(chosen)), kv_leaves(mut['cache'])
  return kv, forward


def _parallel_forward(model, variables, cache, n: int):
  """`_generic_forward` for parallel heads, the n - 1 draft heads as one stacked block.

  The draft heads share one structure, so their parameters and key/value caches are
  stacked once and vmapped: one batched block drafts for all of them (at decode
  sizes a block costs its op count, not its FLOPs). The write index is shared, not
  vmapped, so each head's cache write stays one in-place update. The main head runs
  alone, exactly as in plain decoding, so greedy outputs stay bitwise identical.
  """
  params = variables['params']
  packed = variables.get(PACKED, {})  # decoding's packed kernels, if made
  shared = {k: v for k, v in params.items() if not k.startswith('heads_')}
  packed_shared = {k: v for k, v in packed.items() if not k.startswith('heads_')}
  stack = lambda trees: jax.tree.map(lambda *xs: jnp.stack(xs), *trees)
  draft_params = stack([params[f'heads_{i}'] for i in range(1, n)])
  draft_packed = (stack([packed[f'heads_{i}'] for i in range(1, n)])
                  if all(f'heads_{i}' in packed for i in range(1, n)) else None)
  main_vars = {'params': params, **({PACKED: packed} if packed else {})}
  drafted = {f'heads_{i}' for i in range(1, n)}
  main_kv, main_with_index = split_index({k: v for k, v in cache.items()
                                          if k not in drafted})
  _, head_with_index = split_index(cache['heads_1'])
  kv = (main_kv, stack([kv_leaves(cache[f'heads_{i}']) for i in range(1, n)]))

  def forward(kv, index_B, tokens_BxL, choose, at):
    main_kv, draft_kv = kv
    h_BxLxD, mut = model.apply(
        {**main_vars, 'cache': main_with_index(main_kv, index_B)}, tokens_BxL,
        method='trunk_hidden', mutable=['cache'])
    main_BxLxV, mut = model.apply({**main_vars, 'cache': mut['cache']}, h_BxLxD, 0,
                                  method='head_logits', mutable=['cache'])
    chosen = choose(main_BxLxV)

    def draft(p_head, pk_head, kv_head):  # the head's block over all L rows (its cache)...
      head_vars = {'params': {**shared, 'heads_0': p_head}}
      if pk_head is not None:
        head_vars[PACKED] = {**packed_shared, 'heads_0': pk_head}
      hidden, m = model.apply({**head_vars,
                               'cache': {'heads_0': head_with_index(kv_head, index_B)}},
                              h_BxLxD, method=_head_block, mutable=['cache'])
      return hidden, kv_leaves(m['cache']['heads_0'])

    hidden_KxBxLxD, draft_kv = jax.vmap(draft)(draft_params, draft_packed, draft_kv)
    # ...but the final norm and unembedding only at the one position whose drafts
    # are used: K rows instead of K x L (at a 32K vocabulary most of a head's cost).
    hidden_BxKxD = _at(jnp.moveaxis(hidden_KxBxLxD, 0, 1).swapaxes(1, 2), at(chosen))
    drafts_BxKxV = model.apply({'params': params}, hidden_BxKxD, method=_unembed)
    return main_BxLxV, chosen, drafts_BxKxV, (kv_leaves(mut['cache']), draft_kv)
  return kv, forward


def _head_block(model, h_BxLxD):
  """Output head 0's block alone (no final norm, no unembedding); `model.apply`
  method of `_parallel_forward`, which swaps each draft head's weights in as head 0."""
  return model.heads.head_logits(h_BxLxD, 0, lambda x: x)


def _unembed(model, h_BxKxD):
  """The shared final norm and unembedding of every head: [B, K, D] -> [B, K, V]."""
  return model.decoder.logits(h_BxKxD)


def _spec_forward(model, variables, model_cfg, cache):
  n = model_cfg.mtp.n
  if (model_cfg.mtp.kind == 'parallel' and set(variables) <= {'params', PACKED}
      and all(f'heads_{i}' in variables['params'] for i in range(n))):
    return _parallel_forward(model, variables, cache, n)
  return _generic_forward(model, variables, cache)


@functools.partial(jax.jit, static_argnames=('model_cfg', 'max_new_tokens', 'sampling',
                                             'eos_id', 'pad_id'))
def generate(variables: dict, prompt_BxP: jax.Array, key: jax.Array, *,
             model_cfg: config_lib.ModelConfig, max_new_tokens: int,
             sampling: SamplingConfig = SamplingConfig(0.0),
             eos_id: int | None = None, pad_id: int = 0
             ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Self-speculative decoding; returns (int32[B, N], stats).

  stats: `forwards` [B] (verification forwards after the prefill), `emitted` [B]
  (tokens those forwards emitted, >= N - 1), `accepted_per_forward` [B] (their
  ratio: 1.0 is plain decoding, K + 1 the most).
  """
  B, P = prompt_BxP.shape
  K, N = n_drafts(model_cfg), max_new_tokens
  L = K + 1
  model, variables, cache = _decode_setup(variables, model_cfg, B, P + N + K)
  s = sampling
  greedy = s.temperature == 0.0
  kv, spec = _spec_forward(model, variables, model_cfg, cache)

  key, k_first, k_draft = jax.random.split(key, 3)

  def choose_prefill(main_BxPxV):  # the prompt's own next tokens, then a new one
    last_B = sample_logits(k_first, main_BxPxV[:, -1], s)
    return (jnp.concatenate([prompt_BxP[:, 1:], last_B[:, None]], axis=1),)

  last_B = jnp.full((B,), P - 1, jnp.int32)
  _, (tok_BxP,), draft_BxKxV, kv = spec(kv, jnp.zeros((B,), jnp.int32), prompt_BxP,
                                        choose_prefill, lambda _: last_B)
  index_B = jnp.full((B,), P, jnp.int32)
  drafts_BxK, q_BxKxV = _draw(k_draft, draft_BxKxV, s)
  if greedy:  # q is unused: carry nothing
    q_BxKxV = jnp.zeros((B, K, 0), jnp.float32)
  cur_B = tok_BxP[:, -1]
  out_BxM = jnp.full((B, N + L), pad_id, jnp.int32).at[:, 0].set(cur_B)
  count_B = jnp.ones((B,), jnp.int32)
  done_B = count_B >= N
  if eos_id is not None:
    done_B = done_B | (cur_B == eos_id)
  if B == 1:  # an in-place update, not the scatter vmap makes
    write = lambda o, t, i: jax.lax.dynamic_update_slice(o, t, (0, i[0]))
  else:
    write = jax.vmap(lambda o, t, i: jax.lax.dynamic_update_slice(o, t, (i,)))

  def body(carry):
    kv, index_B, cur_B, drafts_BxK, q_BxKxV, out_BxM, count_B, fwd_B, done_B, key = carry
    k_verify = k_draft = key
    if not greedy:
      key, k_verify, k_draft = jax.random.split(key, 3)
    tokens_BxL = jnp.concatenate([cur_B[:, None], drafts_BxK], axis=1)
    choose = lambda main_BxLxV: _verify(k_verify, main_BxLxV, drafts_BxK, q_BxKxV, s)
    accepted = lambda chosen: jnp.sum(jnp.cumprod(chosen[1].astype(jnp.int32), axis=1),
                                      axis=1)
    _, (tok_BxL, accept_BxK), draft_BxKxV, kv = spec(kv, index_B, tokens_BxL, choose,
                                                     accepted)
    a_B = accepted((tok_BxL, accept_BxK))
    live_B = ~done_B
    # Accept a + 1 tokens by moving the index; rejected entries past it are masked
    # and overwritten by the next forward.
    index_B = jnp.where(live_B, index_B + a_B + 1, index_B)
    out_BxM = jnp.where(live_B[:, None], write(out_BxM, tok_BxL, count_B), out_BxM)
    new_drafts_BxK, new_q_BxKxV = _draw(k_draft, draft_BxKxV, s)
    if greedy:
      new_q_BxKxV = q_BxKxV
    keep = lambda new, old: jnp.where(live_B.reshape((B,) + (1,) * (new.ndim - 1)), new, old)
    if eos_id is not None:
      hit_B = jnp.any((tok_BxL == eos_id) & (jnp.arange(L) <= a_B[:, None]), axis=1)
      done_B = done_B | (live_B & hit_B)
    count_B = jnp.where(live_B, count_B + a_B + 1, count_B)
    return (kv, index_B, keep(_at(tok_BxL, a_B), cur_B),
            keep(new_drafts_BxK, drafts_BxK), keep(new_q_BxKxV, q_BxKxV), out_BxM,
            count_B, fwd_B + live_B, done_B | (count_B >= N), key)

  carry = (kv, index_B, cur_B, drafts_BxK, q_BxKxV, out_BxM, count_B,
           jnp.zeros((B,), jnp.int32), done_B, key)
  carry = jax.lax.while_loop(lambda c: ~jnp.all(c[8]), body, carry)
  out_BxM, count_B, fwd_B = carry[5], carry[6], carry[7]
  emitted_B = count_B - 1
  stats = {'forwards': fwd_B, 'emitted': emitted_B,
           'accepted_per_forward': emitted_B / jnp.maximum(fwd_B, 1)}
  return _stop_after_eos(out_BxM[:, :N], eos_id, pad_id), stats


def compare_with_plain(variables: dict, model_cfg: config_lib.ModelConfig,
                       prompts: list[jax.Array] | jax.Array, max_new_tokens: int, *,
                       repeats: int = 3, pack: bool = True) -> dict[str, Any]:
  """Wall-clock greedy decoding, speculative vs plain, of the same model and prompts.

  Each prompt ([B, P], all the same shape) is decoded by both, in the same process,
  alternating, best of `repeats` after one compile-and-warm-up call each; with `pack`
  both decode with the same packed weights (`lattice.decode.packed_weights`, made once
  here, before the clock starts). Returns
  tokens/s of both, `speedup` (their ratio), `accepted_per_forward` (mean over
  prompts and rows), `identical` (every output matched) and `forward_cost` (the
  wall time of one speculative forward over that of one plain decoding step,
  prefills included in both, so speedup is about accepted_per_forward /
  forward_cost).
  """
  import time  # pylint: disable=g-import-not-at-top
  if pack:
    variables = packed_weights.pack_weights(variables, model_cfg)
  kw = dict(model_cfg=model_cfg, max_new_tokens=max_new_tokens)
  key = jax.random.key(0)
  run_plain = lambda p: generate_plain(variables, p, key, **kw)
  run_spec = lambda p: generate(variables, p, key, **kw)
  identical, apf, best_plain, best_spec, forwards = True, [], 0.0, 0.0, 0
  jax.block_until_ready((run_plain(prompts[0]), run_spec(prompts[0])))
  for prompt in prompts:
    t_plain, t_spec = float('inf'), float('inf')
    for _ in range(repeats):
      t0 = time.perf_counter()
      plain = jax.block_until_ready(run_plain(prompt))
      t1 = time.perf_counter()
      spec, stats = jax.block_until_ready(run_spec(prompt))
      t2 = time.perf_counter()
      t_plain, t_spec = min(t_plain, t1 - t0), min(t_spec, t2 - t1)
    identical &= bool(jnp.array_equal(plain, spec))
    apf.extend(jax.device_get(stats['accepted_per_forward']).tolist())
    forwards += int(jnp.max(stats['forwards']))
    best_plain += t_plain
    best_spec += t_spec
  n_tokens = sum(int(p.shape[0]) for p in prompts) * max_new_tokens
  return {'plain_tokens_per_s': n_tokens / best_plain,
          'spec_tokens_per_s': n_tokens / best_spec,
          'speedup': best_plain / best_spec,
          'accepted_per_forward': sum(apf) / len(apf),
          'forward_cost': (best_spec / forwards) / (
              best_plain / (len(prompts) * max_new_tokens)),
          'identical': identical, 'prompts': len(prompts),
          'packed': PACKED in variables,
          'max_new_tokens': max_new_tokens}

"""Routing math: affinities, (group-limited) top-k, gates, balance losses, loads.

Shape legend: T tokens, E experts, K chosen experts per token, G expert groups,
S sequences, D model width.

Pure functions, so they are tested against hand-computed cases and reused by every
dispatch path. DeepSeek-V3 (arXiv 2412.19437, §2.1.2): sigmoid affinities, a
per-expert bias added only when choosing the top-k, gates = the unbiased affinities
of the chosen experts normalized over the k, times a route scale; group-limited
routing scores a group by the sum of its two best experts. Without a bias (e.g.
DeepSeek-V2's softmax router, arXiv 2405.04434 §2.1.2, device-limited routing), a
group is scored by its single best expert, as DeepSeek-V3's public reference gate
does (`Gate.forward` in github.com/deepseek-ai/DeepSeek-V3, inference/model.py:
max over the group when the gate has no bias, the sum of the top two when it has).
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Callable

import jax
import jax.numpy as jnp

from lattice.moe import modality_router

if typing.TYPE_CHECKING:  # annotations only: lattice.config imports this module's table
  from lattice import config as config_lib


@dataclasses.dataclass(frozen=True)
class Router:
  """One `ROUTERS` entry: how a token's router logits become expert affinities.

  affinity: logits_TxE (float32) -> affinities_TxE.
  restrict: optional (logits_TxE, modality_T or None, ffn options) -> logits_TxE with
    the experts a token may not reach set to a logit no affinity picks (hard routing).
  check: optional (ffn options, whole config) -> None; raises ConfigError naming the
    field, run once when the config is built (by `MoEOptions.check`).
  """
  affinity: Callable[[jax.Array], jax.Array]
  restrict: Callable[[jax.Array, jax.Array | None, Any], jax.Array] | None = None
  check: Callable[[Any, Any], None] | None = None


def _softmax(logits_TxE: jax.Array) -> jax.Array:
  return jax.nn.softmax(logits_TxE, axis=-1)


# model.ffn.router -> its Router: softmax (Switch, DeepSeekMoE), per-expert sigmoid
# (DeepSeek-V3), or softmax restricted by modality ('modality': image tokens to the
# first image_experts experts, text tokens to the rest; lattice/moe/modality_router.py).
ROUTERS = {
    'softmax': Router(_softmax),
    'sigmoid': Router(jax.nn.sigmoid),
    'modality': Router(_softmax, modality_router.restrict, modality_router.check),
}


def affinities(logits_TxE: jax.Array, kind: str) -> jax.Array:
  """Token-to-expert affinities [T, E] of router kind `kind` (a `ROUTERS` entry)."""
  return ROUTERS[kind].affinity(logits_TxE.astype(jnp.float32))


def restrict(logits_TxE: jax.Array, f: config_lib.FFNConfig,
             modality_T: jax.Array | None = None) -> jax.Array:
  """Router logits [T, E] with the experts each token may not reach masked, as the
  router kind `f.router` says (unchanged for routers without a `restrict`).

  `modality_T` (0 text, 1 image; None when the batch carries no modality ids) is
  what a modality router reads; other routers ignore it.
  """
  hook = ROUTERS[f.router].restrict
  return logits_TxE if hook is None else hook(logits_TxE, modality_T, f)


def group_mask(select_TxE: jax.Array, n_groups: int, keep: int,
               top2: bool = True) -> jax.Array:
  """bool[T, E]: True for experts in each token's `keep` best groups.

  A group's score is the sum of its two best experts' selection scores when `top2`
  (DeepSeek-V3 with its bias), else its best expert's (the reference gate without a
  bias). Experts are grouped contiguously: group g holds experts [g*E/G, (g+1)*E/G).
  """
  T, E = select_TxE.shape
  per_group_TxGxM = select_TxE.reshape(T, n_groups, E // n_groups)
  if top2:
    group_score_TxG = jnp.sum(jax.lax.top_k(per_group_TxGxM, min(2, E // n_groups))[0],
                              axis=-1)
  else:
    group_score_TxG = jnp.max(per_group_TxGxM, axis=-1)
  kept_TxG = jax.lax.top_k(group_score_TxG, keep)[1]
  mask_TxG = jnp.zeros((T, n_groups), bool).at[jnp.arange(T)[:, None], kept_TxG].set(True)
  return jnp.repeat(mask_TxG, E // n_groups, axis=1)


def route(logits_TxE: jax.Array, f: config_lib.FFNConfig,
          bias_E: jax.Array | None = None,
          top_k_indices: Callable[[jax.Array, int], jax.Array] | None = None):
  """Returns (expert index [T, K], gate [T, K], affinity [T, E]).

  `bias_E` (the loss-free balancing bias) is added to the affinities for choosing
  only; its presence also switches group scores from best-expert to top-2 sum.
  `top_k_indices(select_TxE, k) -> idx_TxK`: the final choice, the indices of
  `jax.lax.top_k` (the default); the MoE layer passes a native one on CPU.
  """
  scores_TxE = affinities(logits_TxE, f.router)
  select_TxE = jax.lax.stop_gradient(scores_TxE)
  if bias_E is not None:  # Loss-free balancing: the bias steers selection only.
    select_TxE = select_TxE + jax.lax.stop_gradient(bias_E)
  if f.n_groups > 1:
    select_TxE = jnp.where(group_mask(select_TxE, f.n_groups, f.topk_groups,
                                      top2=bias_E is not None),
                           select_TxE, -jnp.inf)
  if top_k_indices is None:
    idx_TxK = jax.lax.top_k(select_TxE, f.top_k)[1]
  else:
    idx_TxK = top_k_indices(select_TxE, f.top_k)
  gate_TxK = jnp.take_along_axis(scores_TxE, idx_TxK, axis=-1)
  if f.norm_topk:
    gate_TxK = gate_TxK / (jnp.sum(gate_TxK, axis=-1, keepdims=True) + 1e-9)
  return idx_TxK, gate_TxK * f.route_scale, scores_TxE


def expert_counts(idx_TxK: jax.Array, n_experts: int,
                  weight_T: jax.Array | None = None) -> jax.Array:
  """Tokens routed to each expert (a token counts once per chosen expert), or with
  `weight_T` the weighted count (e.g. 1 for image tokens: image tokens per expert)."""
  K = idx_TxK.shape[-1]
  w = 1.0 if weight_T is None else jnp.repeat(weight_T, K)
  return jnp.zeros((n_experts,), jnp.float32).at[idx_TxK.reshape(-1)].add(w)


def max_violation(counts_E: jax.Array) -> jax.Array:
  """MaxVio = (max load - mean load) / mean load (arXiv 2408.15664, §4.1)."""
  mean = jnp.mean(counts_E)
  return (jnp.max(counts_E) - mean) / jnp.maximum(mean, 1e-9)


def switch_aux_loss(idx_TxK: jax.Array, scores_TxE: jax.Array) -> jax.Array:
  """Switch/GShard: E * sum_i f_i P_i, f_i the dispatch fraction, P_i mean affinity."""
  T, E = scores_TxE.shape
  K = idx_TxK.shape[-1]
  f_E = expert_counts(idx_TxK, E) / (T * K)
  p_E = jnp.mean(scores_TxE / jnp.sum(scores_TxE, -1, keepdims=True), axis=0)
  return E * jnp.sum(f_E * p_E)


def sequence_aux_loss(idx_SxTxK: jax.Array, scores_SxTxE: jax.Array) -> jax.Array:
  """DeepSeek-V3's sequence-wise balance loss (Eq. 17-20), averaged over sequences."""
  return jnp.mean(jax.vmap(switch_aux_loss)(idx_SxTxK, scores_SxTxE))


def z_loss(logits_TxE: jax.Array) -> jax.Array:
  """ST-MoE router z-loss: mean squared log-partition of the router logits."""
  return jnp.mean(jnp.square(jax.nn.logsumexp(logits_TxE.astype(jnp.float32), axis=-1)))


def bias_update(bias_E: jax.Array, counts_E: jax.Array, rate: float) -> jax.Array:
  """Loss-free balancing: b_i += u * sign(mean load - load_i) (arXiv 2408.15664)."""
  return bias_E + rate * jnp.sign(jnp.mean(counts_E) - counts_E)

"""The MoE feed-forward layer: router, routed experts, shared experts, balancing.

Shape legend: B batch, L length, T = B*L tokens, D model width, E experts,
K experts per token, F expert FFN width, G groups of rows fed to the experts.

`model.ffn.kind='moe'` in the FFN table (`lattice.nn.ffns.FFNS`), so the
transformer block builds it like the dense FFN. What it sows (DESIGN.md: statistics leave through `sow`):
- `intermediates/aux_loss`: the configured balance and z losses (weighted);
- `intermediates/expert_load`: tokens per expert, summed over an eval set for
  MaxVio_global;
- `intermediates/metrics`: `maxvio_batch` and `drop_rate`;
- with modality ids (multimodal frontends): `intermediates/expert_load_image`, the
  image tokens per expert (per-expert modality share).
The router kind (`model.ffn.router`, a `router.ROUTERS` entry) may restrict which
experts a token reaches: 'modality' (hard modality routing) sends image tokens to
the first `image_experts` experts and text tokens to the others.
The loss-free bias lives in the `moe_bias` collection (kept in the train state's
`extra`, never in the gradient) and is updated here when that collection is mutable,
i.e. inside the train step only.

Capacity dispatch never lets one row of a batch change another: in training and
evaluation the capacity is per sequence (each row's drops depend only on its own
earlier tokens); at inference (a forward that writes the KV cache: decoding,
speculative decoding, serving) nothing is dropped at all, so a row's tokens do not
depend on its batch neighbours nor on how many tokens one forward decodes.
"""

from __future__ import annotations

import dataclasses
import typing

import flax.linen as nn
import jax
import jax.numpy as jnp

from kernels.grouped_matmul import grouped_ffn, grouped_matmul, permute
from kernels.grouped_matmul import moe as grouped_moe
from kernels.grouped_matmul import native as grouped_native
from lattice.moe import dispatch, parallel, router
from lattice.nn import layers, mlp
from lattice.moe.options import MoEOptions
from lattice.quant import linears

if typing.TYPE_CHECKING:  # annotations only: lattice.config imports this module's table
  from lattice import config as config_lib

BIAS_COLLECTION = 'moe_bias'


def _ffn_with(cfg: config_lib.ModelConfig, mm):
  """The (gated) FFN wo(act(x wi_0) * x wi_1) over a given matmul `mm(x, w, *extra)`."""
  act = layers.ACTIVATIONS[cfg.ffn.activation]
  gated = cfg.ffn.activation in mlp.GATED

  def ffn(w, x, *extra):
    h = act(mm(x, w['wi_0'], *extra))
    if gated:
      h = h * mm(x, w['wi_1'], *extra)
    return mm(h, w['wo'], *extra)

  return ffn


def expert_ffn(cfg: config_lib.ModelConfig):
  """ffn(w, x_GxCxD) -> y_GxCxD: the batched expert FFN through the Linear kind's hook."""
  lcfg, dtype = cfg.linear, layers.dtype_of(cfg.dtype)
  prepare = linears.LINEARS[lcfg.kind].prepare

  def mm(x_CxI, w_IxO):
    x_CxI, w_IxO = prepare(lcfg, x_CxI, w_IxO, 1)
    return jnp.dot(x_CxI.astype(dtype), w_IxO.astype(dtype))

  return jax.vmap(_ffn_with(cfg, mm))


def ragged_expert_ffn(cfg: config_lib.ModelConfig, ragged_dot=jax.lax.ragged_dot):
  """ffn(w, x_NxD sorted by expert, sizes_E) via `ragged_dot(x_NxI, w_ExIxO, sizes_E)`:
  jax.lax.ragged_dot, kernels.grouped_matmul for dropless_impl='grouped', or
  `tokamax_ragged_dot` for 'tokamax'."""
  lcfg, dtype = cfg.linear, layers.dtype_of(cfg.dtype)
  prepare = linears.LINEARS[lcfg.kind].prepare

  def mm(x_NxI, w_ExIxO, sizes_E):
    # Per-token activation transform, per-expert weight transform (quantized kinds).
    x_NxI = prepare(lcfg, x_NxI, w_ExIxO[0], 1)[0]
    w_ExIxO = jax.vmap(lambda w: prepare(lcfg, x_NxI[:1], w, 1)[1])(w_ExIxO)
    return ragged_dot(x_NxI.astype(dtype), w_ExIxO.astype(dtype), sizes_E)

  return _ffn_with(cfg, mm)


def grouped_expert_ffn(cfg: config_lib.ModelConfig):
  """ffn(w, x_NxD sorted by expert, sizes_E) for dropless_impl='grouped'.

  Float linears: `kernels.grouped_matmul.grouped_ffn` (float32 on CPU with the native
  kernel built: one product per expert over its sorted rows, SwiGLU fused;
  otherwise batched dots over each expert's window of rows and a tile loop past the
  windows); quantized kinds keep their
  `prepare` hook (and its straight-through gradient) through three `grouped_matmul`
  calls.
  """
  if linears.LINEARS[cfg.linear.kind].prepare is not linears.LINEARS['float'].prepare:
    return ragged_expert_ffn(cfg, grouped_matmul)
  dtype, act = layers.dtype_of(cfg.dtype), layers.ACTIVATIONS[cfg.ffn.activation]
  gated = cfg.ffn.activation in mlp.GATED

  def ffn(w, x_NxD, sizes_E):
    cast = lambda a: a.astype(dtype)
    return grouped_ffn(cast(x_NxD), cast(w['wi_0']), cast(w['wi_1']) if gated else None,
                       cast(w['wo']), sizes_E, act)

  return ffn


def native_moves(x_TxD: jax.Array, cfg: config_lib.ModelConfig) -> bool:
  """Whether dropless_impl='grouped' moves rows (token gather, combine) in the native
  CPU kernel: when its rows are float32 on CPU with the kernel built
  (`kernels.grouped_matmul.permute.applies`, the condition of the native grouped FFN)."""
  return permute.applies(x_TxD.dtype) and permute.applies(layers.dtype_of(cfg.dtype))


def auto_dropless_impl() -> str:
  """What dropless_impl='auto' runs on this backend.

  CPU: 'grouped' (`_grouped`: float32 with the native kernel built, SwiGLU experts
  fused with the gather and combine, `kernels.grouped_matmul.moe`; other activations
  `kernels.grouped_matmul.grouped_ffn`, the native per-expert OpenBLAS kernel when
  built, else batched dots over per-expert windows of the sorted rows; the fused path's
  products are its own AVX-512 / AVX2 code, the best the CPU runs, else OpenBLAS's). On the idle
  2-core CPU (BENCHMARKS.md, `41f663e`) the unfused native path took 0.97-1.29x the
  dense FFN's time at E = 8, 16, 32, blocks 1.88-4.39x; the fused path ~1.06-1.19x in
  informal A/B runs on the shared machine (module doc of kernels/grouped_matmul/moe.py).
  Elsewhere 'blocks': it beat ragged_dot on an H200 at the shapes tried (1.3-2.4x,
  BENCHMARKS.md), and the grouped path's remainder loop issues small dots one tile at
  a time, which on an accelerator is launch-bound (not measured there).
  """
  return 'grouped' if jax.default_backend() == 'cpu' else 'blocks'


def expert_parallel_size() -> int:
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or 'expert' not in mesh.axis_names:
    return 1
  return mesh.shape['expert']


def _router_logits(x_TxD: jax.Array, w_DxE: jax.Array) -> jax.Array:
  """logits_TxE = x_TxD @ w_DxE (float32): on CPU with the native grouped kernel built,
  through its sgemm (`kernels.grouped_matmul.native.matmul`: XLA:CPU ran this skinny
  product and its two backward dots at ~75 GFLOP/s); else jnp.dot. (Likewise the
  router's top-k there: `permute.top_k_indices`.)"""
  if permute.applies(jnp.float32):
    return grouped_native.matmul(x_TxD, w_DxE)
  return jnp.dot(x_TxD, w_DxE)


class MoE(nn.Module):
  """The MoE FFN: router, routed experts (`DISPATCH`) and optional shared experts."""
  options = MoEOptions  # its fields of model.ffn, checked once when the config is built
  cfg: config_lib.ModelConfig

  def _weights(self, E: int, D: int, F: int) -> dict[str, jax.Array]:
    pdtype = layers.dtype_of(self.cfg.param_dtype)
    init = nn.initializers.variance_scaling(1.0, 'fan_in', 'truncated_normal',
                                            in_axis=1, out_axis=2, batch_axis=(0,))
    names = ['wi_0', 'wi_1', 'wo'] if self.cfg.ffn.activation in mlp.GATED else [
        'wi_0', 'wo']
    shapes = {'wi_0': (E, D, F), 'wi_1': (E, D, F), 'wo': (E, F, D)}
    axes = {'wi_0': ('exp', 'embed', 'mlp'), 'wi_1': ('exp', 'embed', 'mlp'),
            'wo': ('exp', 'mlp', 'embed')}
    return {n: self.param(n, nn.with_logical_partitioning(init, axes[n]), shapes[n],
                          pdtype) for n in names}

  @nn.compact
  def __call__(self, x_BxLxD: jax.Array, modality_BxL: jax.Array | None = None
               ) -> jax.Array:
    cfg, f = self.cfg, self.cfg.ffn
    B, L, D = x_BxLxD.shape
    E, K = f.n_experts, f.top_k
    x_TxD = x_BxLxD.reshape(B * L, D)
    w_router_DxE = self.param('router', nn.with_logical_partitioning(
        nn.initializers.normal(0.02), ('embed', 'exp')), (D, E), jnp.float32)
    logits_TxE = _router_logits(x_TxD.astype(jnp.float32), w_router_DxE)
    # The router kind may bar experts per token (router='modality': by modality).
    logits_TxE = router.restrict(logits_TxE, f, None if modality_BxL is None
                                 else modality_BxL.reshape(-1))
    bias_E = None
    if f.bias_rate > 0 or f.router_bias:
      bias = self.variable(BIAS_COLLECTION, 'bias', lambda: jnp.zeros((E,), jnp.float32))
      bias_E = bias.value
    idx_TxK, gate_TxK, scores_TxE = router.route(
        logits_TxE, f, bias_E,
        permute.top_k_indices if permute.applies(jnp.float32) else None)
    counts_E = router.expert_counts(idx_TxK, E)
    if (f.bias_rate > 0 and self.is_mutable_collection(BIAS_COLLECTION)
        and not self.is_initializing()):
      bias.value = router.bias_update(bias_E, counts_E, f.bias_rate)

    aux = jnp.zeros((), jnp.float32)
    if f.aux_loss:
      aux += f.aux_loss * router.switch_aux_loss(idx_TxK, scores_TxE)
    if f.seq_aux_loss:
      aux += f.seq_aux_loss * router.sequence_aux_loss(
          idx_TxK.reshape(B, L, K), scores_TxE.reshape(B, L, E))
    if f.z_loss:
      aux += f.z_loss * router.z_loss(logits_TxE)
    if f.aux_loss or f.seq_aux_loss or f.z_loss:
      self.sow('intermediates', 'aux_loss', aux)

    w = self._weights(E, D, cfg.expert_d_ff)
    y_TxD, dropped = self._dispatch(x_TxD, idx_TxK, gate_TxK, w, L)
    self.sow('intermediates', 'expert_load', counts_E)
    if modality_BxL is not None:
      self.sow('intermediates', 'expert_load_image', router.expert_counts(
          idx_TxK, E, modality_BxL.reshape(-1).astype(jnp.float32)))
    self.sow('intermediates', 'metrics', {'maxvio_batch': router.max_violation(counts_E),
                                          'drop_rate': dropped})
    y_BxLxD = y_TxD.reshape(B, L, D).astype(x_BxLxD.dtype)
    if f.n_shared:
      shared = dataclasses.replace(cfg, ffn=dataclasses.replace(
          f, kind='dense', d_ff=f.n_shared * cfg.expert_d_ff))
      y_BxLxD = y_BxLxD + mlp.MLP(shared, name='shared')(x_BxLxD)
    return y_BxLxD

  def _dispatch(self, x_TxD, idx_TxK, gate_TxK, w, seq_len: int):
    cfg = self.cfg
    if cfg.ffn.dispatch == 'capacity' and self.is_mutable_collection('cache'):
      # Inference drops nothing: capacity is a training-throughput device, and a
      # drop would make a row's tokens depend on the rows and tokens beside it.
      cfg = dataclasses.replace(cfg, ffn=dataclasses.replace(cfg.ffn, dispatch='dropless'))
    if expert_parallel_size() > 1:
      return parallel.expert_parallel(x_TxD, idx_TxK, gate_TxK, w, expert_ffn(cfg), cfg,
                                      seq_len)
    return DISPATCH[dispatch_kind(cfg.ffn)](x_TxD, idx_TxK, gate_TxK, w, cfg, seq_len)


def dispatch_kind(f: config_lib.FFNConfig) -> str:
  """The `DISPATCH` entry of `f`: capacity, or dropless with its implementation
  ('auto': `auto_dropless_impl()`, the measured-fastest for the backend)."""
  if f.dispatch == 'capacity':
    return 'capacity'
  return auto_dropless_impl() if f.dropless_impl == 'auto' else f.dropless_impl


def _grouped(x_TxD, idx_TxK, gate_TxK, w, cfg):
  """dropless_impl='grouped': float32 on CPU with the native kernel built
  (`native_moves`), SwiGLU experts of float linears run as one fused native pass per
  direction (`kernels.grouped_matmul.moe.moe_swiglu`: gather, experts and combine),
  other activations or linear kinds through `grouped_expert_ffn` with the native
  row moves; elsewhere XLA's gathers around `grouped_expert_ffn`."""
  E = cfg.ffn.n_experts
  moves = native_moves(x_TxD, cfg)
  float_linear = (linears.LINEARS[cfg.linear.kind].prepare
                  is linears.LINEARS['float'].prepare)
  if moves and float_linear and cfg.ffn.activation == 'swiglu':
    experts = lambda x, order, inv, gate, w, sizes: grouped_moe.moe_swiglu(
        x, order, inv, gate, w['wi_0'], w['wi_1'], w['wo'], sizes)
    return dispatch.dispatch_fused(x_TxD, idx_TxK, gate_TxK, w, experts, E)
  return dispatch.dispatch_ragged(x_TxD, idx_TxK, gate_TxK, w, grouped_expert_ffn(cfg), E,
                                  native_moves=moves)


def tokamax_ragged_dot(x_NxI: jax.Array, w_ExIxO: jax.Array, sizes_E: jax.Array) -> jax.Array:
  """`tokamax.ragged_dot` (jax.lax.ragged_dot's signature and values; its own backward):
  the kernel library's grouped matmul, Pallas Mosaic kernels on Hopper / Blackwell GPUs
  and TPU, Triton elsewhere on GPU, XLA's ragged_dot on CPU. Imported on first use
  (~2 s); `MoEOptions.check` refuses dropless_impl='tokamax' without the package.

  tokamax reads its settings as absl flags and parses sys.argv for them on first use,
  which raises under any other command line (pytest's, argparse programs'); when no
  absl program has parsed the flags, they are marked parsed here, so tokamax takes
  its defaults."""
  import tokamax  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
  return tokamax.ragged_dot(x_NxI, w_ExIxO, sizes_E)


def _capacity(x_TxD, idx_TxK, gate_TxK, w, cfg, seq_len):
  # Capacity per sequence (MaxText's rule): a row's drops depend only on its own
  # tokens, never on the other rows of the batch.
  cap = dispatch.capacity(seq_len, idx_TxK.shape[1], cfg.ffn.n_experts,
                          cfg.ffn.capacity_factor)
  return dispatch.dispatch_capacity(x_TxD, idx_TxK, gate_TxK, w, expert_ffn(cfg),
                                    cfg.ffn.n_experts, cap, group=seq_len)


# Token dispatch on one device: (x [T, D], idx [T, K], gate [T, K], weights, model
# config, sequence length) -> (y [T, D], dropped fraction).
DISPATCH = {
    'capacity': _capacity,
    'blocks': lambda x, idx, gate, w, cfg, seq_len: dispatch.dispatch_blocks(
        x, idx, gate, w, expert_ffn(cfg), cfg.ffn.n_experts),
    'ragged': lambda x, idx, gate, w, cfg, seq_len: dispatch.dispatch_ragged(
        x, idx, gate, w, ragged_expert_ffn(cfg), cfg.ffn.n_experts),
    # The same sort, then the kernel library's grouped matmul (#18: the peer to measure
    # the blocks / grouped paths against on GPU and TPU).
    'tokamax': lambda x, idx, gate, w, cfg, seq_len: dispatch.dispatch_ragged(
        x, idx, gate, w, ragged_expert_ffn(cfg, tokamax_ragged_dot), cfg.ffn.n_experts),
    # Sorted rows, the grouped FFN (native per-expert BLAS or batched windows), no
    # weight gathers; the native row moves for float32 on CPU (`native_moves`).
    'grouped': lambda x, idx, gate, w, cfg, seq_len: _grouped(x, idx, gate, w, cfg),
}

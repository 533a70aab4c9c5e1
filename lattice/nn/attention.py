"""Grouped-query attention with RoPE and a KV cache.

Shape legend: B batch, L query length, S key length (cache size), D model width,
H query heads, K kv heads, G = H / K query heads per kv head, Dh head width.

The cache lives in the flax 'cache' collection: keys/values [B, K, S, Dh] and a
per-row write index [B]. A call with `decode=True` writes its L new keys at the
row's index and attends to every cached position <= the query's position, so the
same code does one-token decoding, multi-token prefill and the verification pass of
speculative decoding; rolling back is just lowering the index (stale entries past it
are masked until overwritten).

Packed rows (several documents per row, lattice.data.pipeline) pass `segment_ids`
[B, L] and per-document `positions`: a query attends only to earlier keys of its
own document (the causal mask AND equal segment ids, MaxText's convention), and RoPE
restarts at 0 per document, so a token's output never depends on the documents
before it in the row. Decoding has no segment ids (one document per cache row).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import typing
import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from kernels.skinny_cpu import attention as native_attention
from lattice.nn import einsum_attention, layers

if typing.TYPE_CHECKING:  # annotations only: lattice.config imports the kind tables
  from lattice import config as config_lib


def rope_frequencies(d_half: int, a: config_lib.AttentionConfig) -> jax.Array:
  """The [Dh/2] RoPE angular frequencies theta^(-i/(Dh/2)), optionally rescaled.

  'linear' divides every frequency by rope_factor; 'llama3' is Llama 3.1's rule
  (transformers' `_compute_llama3_parameters`): wavelengths longer than
  original_max_len/low_freq_factor are divided by the factor, shorter than
  original_max_len/high_freq_factor kept, and the band between interpolated.
  """
  freq = a.rope_theta ** (-jnp.arange(d_half, dtype=jnp.float32) / d_half)
  if a.rope_scaling == 'linear':
    return freq / a.rope_factor
  if a.rope_scaling == 'llama3':
    wavelen = 2 * jnp.pi / freq
    old = a.rope_original_max_len
    scaled = jnp.where(wavelen > old / a.rope_low_freq_factor, freq / a.rope_factor, freq)
    smooth = (old / wavelen - a.rope_low_freq_factor) / (
        a.rope_high_freq_factor - a.rope_low_freq_factor)
    smoothed = (1 - smooth) * scaled / a.rope_factor + smooth * scaled
    medium = (wavelen >= old / a.rope_high_freq_factor) & (
        wavelen <= old / a.rope_low_freq_factor)
    return jnp.where(medium, smoothed, scaled)
  return freq


def rope(x_BxLxNxDh: jax.Array, positions_BxL: jax.Array, theta: float | None = None,
         freq_Dh2: jax.Array | None = None) -> jax.Array:
  """Rotary position embedding (Su et al. 2021), half-split layout as in Llama/MaxText.

  The half-split ("rotate half") layout is also Hugging Face Llama's, so imported
  q/k projections need no row permutation. `freq_Dh2` (rope_frequencies) overrides
  the plain theta^(-i/(Dh/2)) frequencies.
  """
  d_half = x_BxLxNxDh.shape[-1] // 2
  if freq_Dh2 is None:
    freq_Dh2 = theta ** (-jnp.arange(d_half, dtype=jnp.float32) / d_half)
  angle_BxLx1xDh2 = (positions_BxL.astype(jnp.float32)[..., None] * freq_Dh2)[:, :, None, :]
  sin, cos = jnp.sin(angle_BxLx1xDh2), jnp.cos(angle_BxLx1xDh2)
  x1, x2 = jnp.split(x_BxLxNxDh.astype(jnp.float32), 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x_BxLxNxDh.dtype)


def document_mask(segment_ids_BxL: jax.Array) -> jax.Array:
  """bool[B, 1, L, L]: query i may see key j only in its own document (segment id).

  Combined with the causal mask by the caller. Padding (segment 0) sees only
  padding, so no row of the mask is empty and softmax stays finite.
  """
  same_BxLxL = segment_ids_BxL[:, :, None] == segment_ids_BxL[:, None, :]
  return same_BxLxL[:, None]


def _implementation(name: str) -> str | None:
  """`implementation=` for `jax.nn.dot_product_attention` (the decode path, and
  training's library paths): the library's default for the training-only paths."""
  return None if name in ('auto', 'einsum', 'splash') else name


@functools.lru_cache(maxsize=1)
def cudnn_flash_usable() -> bool:
  """Whether 'auto' may take cuDNN's flash attention on this GPU: compute capability
  >= 8.0 and a CUDA runtime below 13.0 (jax's own cuDNN attention tests skip below
  Ampere, and on CUDA 13.0 where "cuDNN creates no execution plans": a failure at XLA
  compile time, which the trace-time fallback cannot catch). False off CUDA or when
  jax does not report the versions."""
  try:
    from jax._src.lib import cuda_versions  # pylint: disable=g-import-not-at-top
    if cuda_versions is None or cuda_versions.cuda_runtime_get_version() >= 13000:
      return False
    gpu = jax.devices('gpu')[0]
    return tuple(int(x) for x in gpu.compute_capability.split('.')) >= (8, 0)
  except Exception:  # pylint: disable=broad-except
    return False


def train_implementation(name: str, dtype=None, head_dim: int = 0, seq_len: int = 0,
                         masked: bool = False) -> str:
  """The training path `model.attention.implementation` resolves to.

  'auto' is 'einsum' (`lattice.nn.einsum_attention`, causal blocks skipped) on CPU,
  where XLA's path of `jax.nn.dot_product_attention` was the step's bottleneck;
  'cudnn' (cuDNN's fused flash attention through `jax.nn.dot_product_attention`) on
  GPU where `cudnn_flash_usable()`, the compute `dtype` is bfloat16/float16,
  `head_dim` is a multiple of 8 up to 128, and, with a document mask (`masked`:
  packed rows, passed to cuDNN as a [B, 1, L, L] bias), `seq_len` is even (cuDNN's
  limits, checked by jax when the gradient is traced, e.g. inside a scan, where no
  fallback can catch them), and the mesh has no tensor parallelism (`_heads_unsharded`); `jax.nn.dot_product_attention(implementation=None)` would
  take XLA's unfused path (#18 item 4). Otherwise 'auto', the library's choice. Any
  other name is returned as given.
  """
  if name != 'auto':
    return name
  backend = jax.default_backend()
  if backend == 'cpu':
    return 'einsum'
  if (backend == 'gpu' and dtype is not None
      and jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
      and head_dim % 8 == 0 and 0 < head_dim <= 128
      and not (masked and seq_len % 2) and _heads_unsharded() and cudnn_flash_usable()):
    return 'cudnn'
  return 'auto'


def _heads_unsharded() -> bool:
  """No tensor parallelism in the current mesh. jax's cuDNN attention checks at
  compile time (custom partitioning) that q, k and v share one sharding, and lattice
  shards query and kv heads over 'tensor' with different head counts (GQA), so 'auto'
  keeps XLA's path under tensor parallelism (not tried on GPUs)."""
  mesh = jax.sharding.get_abstract_mesh()
  return mesh.empty or 'tensor' not in mesh.axis_names or mesh.shape['tensor'] == 1


_CUDNN_FALLBACK_WARNED = []


@functools.lru_cache(maxsize=16)
def _splash_kernel(n_heads: int, seq_len: int, interpret: bool):
  """The splash-attention kernel for causal [seq_len, seq_len] attention over
  `n_heads` heads, blocks of min(512, seq_len) (jax's block sizes must be multiples
  of 128). Built once per shape: the mask's block tables are numpy work."""
  # pylint: disable=g-import-not-at-top
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask
  block = min(512, seq_len)
  while seq_len % block:
    block //= 2
  sizes = splash_attention_kernel.BlockSizes(
      block_q=block, block_kv=block, block_kv_compute=block, block_q_dkv=block,
      block_kv_dkv=block, block_kv_dkv_compute=block, block_q_dq=block, block_kv_dq=block)
  mask = splash_attention_mask.MultiHeadMask(
      [splash_attention_mask.CausalMask((seq_len, seq_len)) for _ in range(n_heads)])
  # Concrete arrays even when first built inside a trace (jit, init): the cached
  # kernel holds its block tables, which would otherwise be that trace's tracers.
  with jax.ensure_compile_time_eval():
    return splash_attention_kernel.make_splash_mha(
        mask, block_sizes=sizes, head_shards=1, q_seq_shards=1, interpret=interpret)


def splash_attention(q_BxLxHxDh: jax.Array, k_BxLxKxDh: jax.Array, v_BxLxKxDh: jax.Array,
                     segment_ids_BxL: jax.Array | None = None) -> jax.Array:
  """[B, L, H, Dh] causal attention within documents with Pallas's TPU flash kernel
  (splash attention, `jax.experimental.pallas.ops.tpu.splash_attention`; MaxText's
  TPU default): blockwise, never materialising [L, L] logits or a document mask, and
  skipping the blocks the causal and document masks rule out. Segment ids [B, L] are
  the kernel's own (a query sees keys of its segment only, lattice's packed-row
  convention); None is one document per row. GQA: H a multiple of K. Logits are
  scaled by 1/sqrt(Dh) (q scaled before the kernel). Off TPU the kernel runs in
  Pallas's interpreter (tests; slow). Per-row kernels are vmapped over B, and under a
  mesh run in a `jax.shard_map` (rows over the data-parallel axes, heads over
  'tensor': the flax axis rules in context, lattice.sharding.RULES under use_mesh;
  without rules every device runs every row and head). Raises ValueError unless L is a multiple of 128
  (the kernel's blocks).
  """
  B, L, H, Dh = q_BxLxHxDh.shape
  if L % 128:
    raise ValueError(f"attention.implementation='splash': the sequence length must be "
                     f"a multiple of 128 (the kernel's blocks), got {L}")
  kernel = _splash_kernel(H, L, jax.default_backend() != 'tpu')
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel  # pylint: disable=g-import-not-at-top
  q_BxHxLxDh = (q_BxLxHxDh * (Dh ** -0.5)).astype(q_BxLxHxDh.dtype).transpose(0, 2, 1, 3)
  k_BxKxLxDh = k_BxLxKxDh.transpose(0, 2, 1, 3)
  v_BxKxLxDh = v_BxLxKxDh.transpose(0, 2, 1, 3)
  if segment_ids_BxL is None:
    segment_ids_BxL = jnp.zeros((B, L), jnp.int32)

  def one_row(q_HxLxDh, k_KxLxDh, v_KxLxDh, seg_L):
    ids = splash_attention_kernel.SegmentIds(q=seg_L, kv=seg_L)
    return kernel(q_HxLxDh, k_KxLxDh, v_KxLxDh, segment_ids=ids)

  rows = jax.vmap(one_row)
  mesh = jax.sharding.get_abstract_mesh()
  if not mesh.empty:
    # Each device runs the kernel on its own rows and heads (the kernel is a custom
    # call XLA cannot partition): batch over the data-parallel axes, heads over
    # 'tensor' (K % tensor == 0 is checked at build, so GQA groups stay whole).
    # The rules lattice.sharding.use_mesh installs (no import of lattice.sharding
    # here: it imports lattice.config, which imports the model tables).
    batch, heads = nn.logical_to_mesh_axes(('act_batch', 'act_heads'))
    size = lambda axes: math.prod(mesh.shape[a] for a in (
        axes if isinstance(axes, tuple) else (axes,) if axes else ()))
    if B % size(batch):
      batch = None  # (init's one-row batch: every device takes the whole of it)
    qkv = jax.sharding.PartitionSpec(batch, heads, None, None)
    rows = jax.shard_map(rows, mesh=mesh, in_specs=(qkv, qkv, qkv,
                                                    jax.sharding.PartitionSpec(batch)),
                         out_specs=qkv, check_vma=False)
  out_BxHxLxDh = rows(q_BxHxLxDh, k_BxKxLxDh, v_BxKxLxDh, segment_ids_BxL.astype(jnp.int32))
  return out_BxHxLxDh.transpose(0, 2, 1, 3).astype(q_BxLxHxDh.dtype)


class Attention(nn.Module):
  cfg: config_lib.ModelConfig
  decode: bool = False

  @nn.compact
  def __call__(self, x_BxLxD: jax.Array, positions_BxL: jax.Array,
               segment_ids_BxL: jax.Array | None = None) -> jax.Array:
    """x [B, L, D] at `positions` [B, L] -> [B, L, D]. `segment_ids` [B, L] (packed
    training/eval rows only) keeps attention inside each document; ignored when
    decoding, where positions and visibility come from the cache."""
    cfg = self.cfg
    dtype, pdtype = layers.dtype_of(cfg.dtype), layers.dtype_of(cfg.param_dtype)
    H, K, Dh = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim

    a = cfg.attention
    # Qwen2-style biases on q/k/v only (the out projection follows cfg.linear).
    qkv_linear = (dataclasses.replace(cfg.linear, use_bias=True) if a.qkv_bias
                  else cfg.linear)

    def proj(n, axis, name):
      y = layers.dense(qkv_linear, (n, Dh), ('embed',), (axis, 'head_dim'),
                       dtype=dtype, param_dtype=pdtype, name=name)(x_BxLxD)
      if a.qk_norm and name != 'value':  # Qwen3: RMSNorm per head before RoPE
        y = layers.RMSNorm(cfg.norm_eps, dtype, pdtype, 'head_dim',
                           name=f'{name}_norm')(y)
      return y

    if self.decode and self.has_variable('cache', 'cache_index'):
      # Decoding positions come from the cache, so callers cannot get them wrong.
      L = x_BxLxD.shape[1]
      positions_BxL = self.get_variable('cache', 'cache_index')[:, None] + jnp.arange(L)
    freq_Dh2 = rope_frequencies(Dh // 2, a)
    q_BxLxHxDh = rope(proj(H, 'heads', 'query'), positions_BxL, freq_Dh2=freq_Dh2)
    k_BxLxKxDh = rope(proj(K, 'kv_heads', 'key'), positions_BxL, freq_Dh2=freq_Dh2)
    v_BxLxKxDh = proj(K, 'kv_heads', 'value')
    q_BxLxHxDh = layers.constrain(q_BxLxHxDh, ('act_batch', 'act_len', 'act_heads', None))

    if self.decode:
      out_BxLxHxDh = self._cached_attention(q_BxLxHxDh, k_BxLxKxDh, v_BxLxKxDh)
    else:
      out_BxLxHxDh = self._train_attention(q_BxLxHxDh, k_BxLxKxDh, v_BxLxKxDh,
                                           segment_ids_BxL)
    out_BxLxHxDh = layers.constrain(out_BxLxHxDh,
                                    ('act_batch', 'act_len', 'act_heads', None))
    if cfg.subln:  # one norm over the concatenated heads, as in BitNet 2B4T
      B, L, H, Dh = out_BxLxHxDh.shape
      out_BxLxHxDh = layers.RMSNorm(cfg.norm_eps, dtype, pdtype, None, name='subln')(
          out_BxLxHxDh.reshape(B, L, H * Dh)).reshape(B, L, H, Dh)
    return layers.dense(cfg.linear, cfg.d_model, ('heads', 'head_dim'), ('embed',),
                        dtype=dtype, param_dtype=pdtype, name='out')(out_BxLxHxDh)

  def _train_attention(self, q_BxLxHxDh, k_BxLxKxDh, v_BxLxKxDh, segment_ids_BxL):
    """Causal attention within documents over the whole (packed) rows."""
    asked = self.cfg.attention.implementation
    impl = train_implementation(asked, q_BxLxHxDh.dtype, q_BxLxHxDh.shape[-1],
                                q_BxLxHxDh.shape[1], segment_ids_BxL is not None)
    if impl == 'einsum':
      # Query blocks of 64 rows (4 at the benchmark's L=256), at most 8 blocks, so
      # long rows do not unroll into many small matmuls at compile time.
      block = max(64, -(-q_BxLxHxDh.shape[1] // 8))
      return einsum_attention.causal_attention(q_BxLxHxDh, k_BxLxKxDh, v_BxLxKxDh,
                                               segment_ids_BxL, block=block)
    if impl == 'splash':
      return splash_attention(q_BxLxHxDh, k_BxLxKxDh, v_BxLxKxDh, segment_ids_BxL)
    mask = None if segment_ids_BxL is None else document_mask(segment_ids_BxL)
    call = lambda impl: jax.nn.dot_product_attention(
        q_BxLxHxDh, k_BxLxKxDh, v_BxLxKxDh, mask=mask, is_causal=True,
        implementation=_implementation(impl))
    if impl == 'cudnn' and asked == 'auto':
      try:  # jax checks cuDNN's presence, version and the GPU when it traces
        return call('cudnn')
      except (RuntimeError, NotImplementedError, ValueError) as e:
        if not _CUDNN_FALLBACK_WARNED:
          _CUDNN_FALLBACK_WARNED.append(True)
          warnings.warn(f'attention: cuDNN flash attention unavailable, using XLA\'s '
                        f'path ({type(e).__name__}: {str(e)[:200]})')
        return call('xla')
    return call(impl)

  def _cached_attention(self, q_BxLxHxDh, k_BxLxKxDh, v_BxLxKxDh):
    B, L, K, Dh = k_BxLxKxDh.shape
    S = self.cfg.max_len
    initialized = self.has_variable('cache', 'cached_key')
    # Heads-major [B, K, S, Dh]: both attention dots read the cache in place (a
    # [B, S, K, Dh] cache was transposed, a full copy per layer, at every step).
    zeros = lambda: jnp.zeros((B, K, S, Dh), k_BxLxKxDh.dtype)
    cache_k = self.variable('cache', 'cached_key', zeros)
    cache_v = self.variable('cache', 'cached_value', zeros)
    index = self.variable('cache', 'cache_index', lambda: jnp.zeros((B,), jnp.int32))
    if not initialized:  # Shape-only call from init_cache: nothing to attend to yet.
      return jnp.zeros(q_BxLxHxDh.shape, q_BxLxHxDh.dtype)
    i_B = index.value
    def write(caches):
      return (_write(caches[0], jnp.swapaxes(k_BxLxKxDh, 1, 2), i_B),
              _write(caches[1], jnp.swapaxes(v_BxLxKxDh, 1, 2), i_B))
    caches = (cache_k.value, cache_v.value)
    if jax.default_backend() == 'cpu':
      # A cond whose predicate always holds: XLA:CPU cannot fuse across it, so each
      # write stays one in-place update (else it duplicated the write into the dot's
      # operand and copied every layer's cache at every step: 55 -> 36 us per token
      # at d_model 64, benchmarks/speculative_decode). Not on GPU/TPU, where a cond
      # reads its predicate back to the host.
      cache_k.value, cache_v.value = jax.lax.cond(i_B[0] >= 0, write, lambda c: c, caches)
    else:
      cache_k.value, cache_v.value = write(caches)
    index.value = i_B + L
    q_pos_BxL = i_B[:, None] + jnp.arange(L)
    mask_BxLxS = jnp.arange(S)[None, None, :] <= q_pos_BxL[:, :, None]
    implementation = _implementation(self.cfg.attention.implementation)
    if implementation in (None, 'xla') and native_attention.use_for(q_BxLxHxDh,
                                                                    cache_k.value):
      # One native call for every row and head on CPU (kernels/skinny_cpu/attention.py);
      # a row computes the same in a plain step and in a verification forward.
      return native_attention.decode_attention_cpu(q_BxLxHxDh, cache_k.value,
                                                   cache_v.value, q_pos_BxL)
    if implementation not in (None, 'xla'):  # e.g. cuDNN: its [B, S, K, Dh] layout
      return jax.nn.dot_product_attention(
          q_BxLxHxDh, jnp.swapaxes(cache_k.value, 1, 2), jnp.swapaxes(cache_v.value, 1, 2),
          mask=mask_BxLxS[:, None], implementation=implementation)
    return decode_attention(q_BxLxHxDh, cache_k.value, cache_v.value, mask_BxLxS)


def _write(cache_BxKxSxDh: jax.Array, new_BxKxLxDh: jax.Array, i_B: jax.Array):
  """The cache with each row's L new entries written at that row's index."""
  if cache_BxKxSxDh.shape[0] == 1:  # one row: a plain in-place update (vmap scatters)
    return jax.lax.dynamic_update_slice(cache_BxKxSxDh, new_BxKxLxDh, (0, 0, i_B[0], 0))
  write = jax.vmap(lambda c, new, i: jax.lax.dynamic_update_slice(c, new, (0, i, 0)))
  return write(cache_BxKxSxDh, new_BxKxLxDh, i_B)


def decode_attention(q_BxLxHxDh: jax.Array, k_BxKxSxDh: jax.Array,
                     v_BxKxSxDh: jax.Array, mask_BxLxS: jax.Array) -> jax.Array:
  """Grouped-query attention of L new queries over a heads-major KV cache.

  The arithmetic of `jax.nn.dot_product_attention`'s XLA path (logits in float32,
  scaled by 1/sqrt(Dh), masked to -0.7 x the float32 maximum, float32 softmax), with
  the query heads grouped per kv head (G = H / K) so that both dots are batched over
  (B, K) and read the cache without a transpose. Returns [B, L, H, Dh].
  """
  B, L, H, Dh = q_BxLxHxDh.shape
  K = k_BxKxSxDh.shape[1]
  if 1 < L <= layers.ROWWISE_MAX_ROWS and jax.default_backend() == 'cpu':
    # (Cached attention uses the native kernel instead where it is built:
    # kernels/skinny_cpu/attention.py.) A verification forward's few query rows, one
    # at a time: XLA:CPU runs a one-row
    # attention dot as a cheap batched matrix-vector product but hands a 2..8-row
    # one to a library kernel at ~3x the cost (profile of
    # benchmarks/speculative_decode, d_model 256), and each row then computes
    # exactly what a plain one-token step computes.
    return jnp.concatenate([decode_attention(q_BxLxHxDh[:, l:l + 1], k_BxKxSxDh,
                                             v_BxKxSxDh, mask_BxLxS[:, l:l + 1])
                            for l in range(L)], axis=1)
  q_BxKxGLxDh = jnp.swapaxes(q_BxLxHxDh.reshape(B, L, K, H // K, Dh), 1, 2).reshape(
      B, K, L * (H // K), Dh)  # rows ordered (l, g): query l's group shares mask row l
  logits_BxKxGLxS = jnp.einsum('bkqd,bksd->bkqs', q_BxKxGLxDh, k_BxKxSxDh,
                               preferred_element_type=jnp.float32)
  logits_BxKxGLxS = logits_BxKxGLxS * jnp.float32(1.0 / np.sqrt(Dh))
  mask_Bx1xGLxS = jnp.repeat(mask_BxLxS, H // K, axis=1)[:, None]
  logits_BxKxGLxS = jnp.where(mask_Bx1xGLxS, logits_BxKxGLxS,
                              einsum_attention.large_negative(jnp.float32))
  probs_BxKxGLxS = jax.nn.softmax(logits_BxKxGLxS, axis=-1).astype(v_BxKxSxDh.dtype)
  out_BxKxGLxDh = jnp.einsum('bkqs,bksd->bkqd', probs_BxKxGLxS, v_BxKxSxDh)
  return jnp.swapaxes(out_BxKxGLxDh.reshape(B, K, L, H // K, Dh), 1, 2).reshape(
      B, L, H, Dh)

"""Decode attention of a few query rows over a heads-major KV cache, on CPU through
the native kernel (attention_cpu.cc, in the skinny_cpu library).

Shape legend: B batch, L query rows, H query heads, K key/value heads (H = K x G),
S cache positions, Dh head dimension.

XLA:CPU runs decode attention as about eight small ops per layer, and a 2..8-row
self-speculative verification forward either repeats them row by row or sends the
dots to a library GEMM at ~3x the cost (benchmarks/speculative_decode). The kernel
does every row and head of a layer in one call, reads only the visible cache
positions, and computes each row the same whatever L is, so plain decoding (L = 1)
and verification (L = K + 1) give bitwise the same rows.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from kernels.skinny_cpu import ops


def use_for(q_BxLxHxDh: jax.Array, k_BxKxSxDh: jax.Array) -> bool:
  """Whether `lattice.nn.attention` sends cached (decoding) attention here: on CPU,
  float32 queries and cache, the kernel available (`ops.available()`, which
  LATTICE_SKINNY_MATMUL=0 turns off too), any number of query rows.

  A prompt's prefill comes here too: the kernel reads only the positions each row
  sees, where XLA's path computes and masks all S. Measured (one jitted call, 2-core
  Xeon 6/167, idle, 3 Dec; native vs XLA's `decode_attention`): H 4, S 192: 20 vs
  152 us at L 32, 146 vs 396 at L 128; H 8, S 1024: 53 vs 1,098 us at L 32, 1,295 vs
  3,949 at L 256; H 16 over 4 kv heads, S 2048: 2,812 vs 29,003 us at L 256.
  Whatever L is, the kernel takes the same path for every row (AVX-512: Rows16, in
  groups of 8 rows; else Row8 or the portable Row, row by row), so a prefill row
  rounds as a decoding row does."""
  return (q_BxLxHxDh.dtype == jnp.float32 and k_BxKxSxDh.dtype == jnp.float32
          and jax.default_backend() == 'cpu' and ops.available())


def decode_attention_cpu(q_BxLxHxDh: jax.Array, k_BxKxSxDh: jax.Array,
                         v_BxKxSxDh: jax.Array, pos_BxL: jax.Array, *,
                         isa: str = 'auto') -> jax.Array:
  """float32 [B, L, H, Dh]: query row l of entry b attends cache positions
  s <= pos_BxL[b, l] (all S, uniformly, if pos < 0, as a fully masked softmax does).

  The arithmetic of `lattice.nn.attention.decode_attention` (logits scaled by
  1/sqrt(Dh), float32 softmax, the probabilities times v), in a fixed order that does
  not depend on L; exp is a polynomial (relative error ~2e-7), so results match the
  XLA path to float32 rounding, not bitwise. Extra leading axes (vmap) are batch.
  isa: 'auto' or 'avx512' | 'avx2' | 'scalar' (tests). Raises RuntimeError if the
  kernel is not built, ValueError for bad shapes, dtypes or an unknown or
  unsupported isa. CPU only; no gradient (decoding).
  """
  if isa not in ops.ISAS:
    raise ValueError(f'decode_attention_cpu: isa must be one of {tuple(ops.ISAS)}, '
                     f'got {isa!r}')
  if ops.best_isa() is None:
    raise RuntimeError('decode_attention_cpu: the native kernel is not built (run '
                       '`python setup.py build_ext --inplace` or reinstall lattice)')
  if isa != 'auto' and not ops.supports(isa):
    raise ValueError(f'decode_attention_cpu: isa {isa!r} is not supported by this CPU')
  q, k, v = q_BxLxHxDh, k_BxKxSxDh, v_BxKxSxDh
  if (q.ndim != 4 or k.shape != v.shape or k.ndim != 4 or q.shape[0] != k.shape[0]
      or q.shape[3] != k.shape[3] or q.shape[2] % k.shape[1]
      or pos_BxL.shape != q.shape[:2]
      or any(x.dtype != jnp.float32 for x in (q, k, v))):
    raise ValueError(
        f'decode_attention_cpu: want float32 q [B, L, H, Dh], k and v [B, K, S, Dh] with '
        f'H a multiple of K, pos [B, L]; got q {q.dtype}{list(q.shape)}, k '
        f'{k.dtype}{list(k.shape)}, v {v.dtype}{list(v.shape)}, pos {list(pos_BxL.shape)}')
  # vmap: the kernel takes any leading axes as batch ('broadcast_all' gives every
  # operand the vmapped axis first).
  return jax.ffi.ffi_call(ops.ATTENTION_TARGET,
                          jax.ShapeDtypeStruct(q.shape, jnp.float32),
                          vmap_method='broadcast_all')(
      q, k, v, pos_BxL.astype(jnp.int32), isa=np.int32(ops.ISAS[isa]))

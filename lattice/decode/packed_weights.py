"""Decode-time weight layout: packed copies of the projection kernels, made once.

Decoding multiplies 1 row (a plain step) or a few rows (a self-speculative
verification forward) by every weight matrix, so a step costs about its weight
reads. The native skinny kernel (kernels/skinny_cpu) reads a row-major [I, O] kernel
as 64-column panels, 256 bytes per input feature at a stride of O floats; in the
packed layout [O / 64, I, 64] each panel is one contiguous stream, which the CPU
prefetches well. Same multiply-adds, same order, same bits (tests/packed_weights_test.py),
and faster: a 256 x 704 projection, one thread, weights streaming from L3/DRAM, took
10-11 us packed against 17 us unpacked for one row and 12-12.5 us against 21 us for
two rows (informal C micro-benchmark on the 2-core AMD EPYC build machine, 30 Nov;
benchmarks/speculative_decode measures the decoders end to end).

`pack_weights(variables, model_cfg)` returns the variables with a
`decode_packed` collection beside `params`: one packed copy per float projection
kernel (`lattice.quant.linear.Linear` with no quantizer, float32, output dims a
multiple of 64). Decoders (`lattice.decode.speculative.generate` /
`generate_plain`, `lattice.decode.sampling.generate`) use it wherever the skinny
kernel runs (CPU, <= 8 rows per product) and the unpacked `params` elsewhere
(prefill, GPU/TPU). The copy doubles those kernels' memory, so it is made once per
loaded model by whoever decodes many times (the benchmarks, `lattice serve`), not per
request; training never sees it.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from kernels.skinny_cpu import ops as skinny_ops
from lattice import config as config_lib
from lattice import model as model_lib
from lattice.nn import contraction

PACKED = contraction.PACKED_COLLECTION


def pack_weights(variables: dict, model_cfg: config_lib.ModelConfig, *,
                 module: nn.Module | None = None) -> dict:
  """`variables` plus the `decode_packed` collection (see the module docstring).

  One forward over a [1, 1] token batch with the collection mutable, so every
  projection a decoder runs packs its own kernel: of the training-mode model of
  `model_cfg` (`outputs`, every head), or of `module` (its `__call__`, e.g. a bare
  `lattice.nn.transformer.Transformer`). Returned unchanged where packing cannot pay:
  the skinny kernel unavailable (not CPU, not built, LATTICE_SKINNY_MATMUL=0), a
  non-text frontend, no float32 projection with a multiple of 64 outputs. Quantized
  projections stay unpacked. Jitted; about one copy of the weights, once.
  """
  if not (jax.default_backend() == 'cpu' and skinny_ops.available()):
    return variables
  base = {k: v for k, v in variables.items() if k not in ('cache', 'intermediates', PACKED)}
  tokens = jnp.zeros((1, 1), jnp.int32)
  if module is None:
    if model_cfg.frontend.kind != 'text':
      return variables
    model = model_lib.make_model(model_cfg)
    batch = {'inputs': tokens, 'targets': tokens, 'weights': jnp.zeros((1, 1), jnp.float32)}
    apply = lambda v: model.apply(v, batch, method='outputs', mutable=[PACKED])
  else:
    apply = lambda v: module.apply(v, tokens, mutable=[PACKED])
  packed = jax.jit(lambda v: apply(v)[1].get(PACKED, {}))(base)
  return {**variables, PACKED: packed} if packed else variables

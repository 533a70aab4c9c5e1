"""NanoQuant-style sub-1-bit post-training compression (arXiv 2602.06694).

Shape legend: K a projection's contracted features (flattened), N its output
features (flattened), r the binary rank, T calibration tokens, B/L/D as elsewhere.

Every projection's float kernel W [K, N] becomes

    W ~ s_in[:, None] * (sign(U) @ sign(V).T) * s_out[None, :],  U [K, r], V [N, r]

with the rank from a bits-per-weight budget that counts the scales:
(r + 16) (K + N) = bits K N, i.e. r = bits K N / (K + N) - 16, rounded down to a
multiple of `nq_rank_multiple` (the paper rounds to 32; our tiny matrices need 8).

`compress` goes block by block, as the paper does:
  1. tune the float block's weights on the *compressed* model's inputs to that block
     so they absorb the error of the blocks before it (targets: the float block's
     outputs on the float model's inputs);
  2. initialize each projection's U, V from the activation-weighted matrix
     diag(d) W, d_k = RMS of input feature k on the calibration data: by the
     paper's ADMM (lattice.quant.nanoquant_init: random start, sign-value-
     independent projections, a penalty rising linearly over 400 iterations; its
     scales kept as their start), or, for comparison, by the signs of the same
     matrix's truncated SVD; then refine s_in and s_out by alternating least
     squares (never increasing the weighted error);
  3. tune the latent U, V (sign with a straight-through gradient) and the scales
     against the float block's outputs;
and optionally distils the whole compressed model to the float model's next-token
distribution (KL) at the end. `model.linear.kind='nanoquant'` builds the compressed
model; embeddings, norms and the output head stay float.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from lattice import config as config_lib
from lattice.nn import layers, transformer

from lattice.quant.nanoquant_init import (  # noqa: F401
    admm_init, fit_scales, init_factors, signs, weighted_error)
from lattice.quant.nanoquant_linear import (  # noqa: F401
    KIND, SCALE_BITS, binary_weight, bits_per_weight, rank_for)

__all__ = ['CompressConfig', 'admm_init', 'binary_weight', 'bits_per_weight', 'compress',
           'fit_scales', 'init_factors', 'rank_for', 'signs', 'weighted_error']


# ---- block-wise compression -------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class CompressConfig:
  bits: float = 1.0
  init: str = 'admm'          # admm | svd
  float_steps: int = 50       # step 1: float block tuned on compressed inputs
  block_steps: int = 200      # step 3: latent U, V and scales
  distill_steps: int = 0      # final KL distillation of the whole model (0: off)
  lr: float = 1e-3
  rank_multiple: int = 8
  seed: int = 0               # ADMM's random start


def _mse(a, b):
  return jnp.mean(jnp.square(a.astype(jnp.float32) - b.astype(jnp.float32)))


def _tuner(loss_fn, lr: float):
  """tune(params, steps, *data) -> params: Adam on loss_fn(params, *data), jitted once."""
  tx = optax.adam(lr)

  @jax.jit
  def step(p, opt, *data):
    loss, g = jax.value_and_grad(loss_fn)(p, *data)
    upd, opt = tx.update(g, opt, p)
    return optax.apply_updates(p, upd), opt, loss

  def tune(params, steps: int, *data):
    opt = tx.init(params)
    for _ in range(steps):
      params, opt, _ = step(params, opt, *data)
    return params

  return tune


def _block_loss(block: nn.Module):
  def loss(p, x, positions, target):
    return _mse(block.apply({'params': p}, x, positions), target)
  return loss


def _linear_inputs(block: nn.Module, params, x, positions) -> dict[tuple, np.ndarray]:
  """Per-projection input RMS over the calibration tokens, keyed by module path."""
  rms = {}

  def interceptor(next_fun, args, kwargs, context):
    mod = context.module
    if isinstance(mod, layers.Linear) and context.method_name == '__call__':
      n_in = len(mod.in_axes)
      a = np.asarray(args[0], np.float32)
      a = a.reshape(-1, math.prod(a.shape[a.ndim - n_in:]))
      rms[tuple(mod.path)] = np.sqrt(np.mean(a * a, axis=0)) + 1e-8
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(interceptor):
    block.apply({'params': params}, x, positions)
  return rms


def compress(model_cfg: config_lib.ModelConfig, params: Any, calib_BxL: np.ndarray,
             cc: CompressConfig = CompressConfig()) -> tuple[config_lib.ModelConfig, dict, dict]:
  """(compressed config, compressed params, report) of a trained float model.

  `calib_BxL` are the calibration token ids. The report holds bits_per_weight,
  compressed/float32/bf16 projection bytes and `init_error`: each projection's
  activation-weighted relative reconstruction error right after initialization
  (`weighted_error`), keyed 'layers_i/<module path>'. Raises ConfigError for a
  model that is not float with dense FFNs, or with scanned layers.
  """
  if model_cfg.linear.kind != 'float' or model_cfg.ffn.kind != 'dense':
    raise config_lib.ConfigError(
        'nanoquant: compresses float models with dense FFNs (model.linear.kind=float, '
        f'model.ffn.kind=dense), got {model_cfg.linear.kind!r} / {model_cfg.ffn.kind!r}')
  if model_cfg.scan_layers:
    raise config_lib.ConfigError('nanoquant: needs model.scan_layers=False (per-block params)')
  nq_cfg = dataclasses.replace(model_cfg, linear=dataclasses.replace(
      model_cfg.linear, kind=KIND, nq_bits=cc.bits, nq_rank_multiple=cc.rank_multiple))
  params = jax.device_get(nn.unbox(params))
  fmodel = transformer.Transformer(model_cfg)
  tokens = jnp.asarray(calib_BxL)
  positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
  x_float = fmodel.apply({'params': params}, tokens, method=transformer.Transformer.embed_tokens)
  x_comp = x_float
  fblock, qblock = transformer.Block(model_cfg), transformer.Block(nq_cfg)
  f_apply, q_apply = jax.jit(fblock.apply), jax.jit(qblock.apply)
  tune_float = _tuner(_block_loss(fblock), cc.lr)
  tune_quant = _tuner(_block_loss(qblock), cc.lr)
  out = {k: v for k, v in params.items() if not k.startswith('layers_')}
  n_bits = n_weights = 0
  init_error: dict[str, float] = {}
  for i in range(model_cfg.n_layers):
    p_float = params[f'layers_{i}']
    target = f_apply({'params': p_float}, x_float, positions)
    # 1. the float block absorbs the error of the compressed blocks before it.
    p_float = tune_float(p_float, cc.float_steps, x_comp, positions, target)
    # 2. factor every projection from its activation-weighted matrix.
    rms = _linear_inputs(fblock, p_float, x_comp, positions)
    shapes = jax.eval_shape(qblock.init, jax.random.key(0), x_comp, positions)['params']
    flat_f = flax.traverse_util.flatten_dict(p_float)
    p_q = {}
    for path, leaf in flax.traverse_util.flatten_dict(nn.unbox(shapes)).items():
      if path[-1] in ('u', 'v', 's_in', 's_out'):
        if path[-1] == 'u':
          kernel = np.asarray(flat_f[path[:-1] + ('kernel',)], np.float64)
          k, r = leaf.shape
          w = kernel.reshape(k, -1)
          u, v, s_in, s_out = init_factors(w, rms[path[:-1]], r, cc.init, seed=cc.seed)
          init_error[f'layers_{i}/' + '/'.join(path[:-1])] = weighted_error(
              w, rms[path[:-1]], signs(u) @ signs(v).T, s_in, s_out)
          for name, val in zip(('u', 'v', 's_in', 's_out'), (u, v, s_in, s_out)):
            p_q[path[:-1] + (name,)] = jnp.asarray(val, jnp.float32)
          n_bits += (r + SCALE_BITS) * (k + w.shape[1])
          n_weights += w.size
      else:
        p_q[path] = jnp.asarray(flat_f[path])
    p_q = flax.traverse_util.unflatten_dict(p_q)
    # 3. tune latent factors and scales against the float block's outputs.
    p_q = tune_quant(p_q, cc.block_steps, x_comp, positions, target)
    out[f'layers_{i}'] = p_q
    x_float, x_comp = target, q_apply({'params': p_q}, x_comp, positions)
  qmodel = transformer.Transformer(nq_cfg)
  if cc.distill_steps:
    teacher = jax.jit(fmodel.apply)({'params': params}, tokens)

    def kl(p, tokens, teacher_logits):
      teacher = jax.nn.log_softmax(teacher_logits)
      student = jax.nn.log_softmax(qmodel.apply({'params': p}, tokens))
      return jnp.mean(jnp.sum(jnp.exp(teacher) * (teacher - student), -1))

    out = _tuner(kl, cc.lr * 0.3)(out, cc.distill_steps, tokens, teacher)
  report = {'bits_per_weight': n_bits / max(n_weights, 1),
            'compressed_proj_bytes': n_bits / 8,
            'float32_proj_bytes': 4 * n_weights,
            'bf16_proj_bytes': 2 * n_weights,
            'init_error': init_error}
  return nq_cfg, out, report

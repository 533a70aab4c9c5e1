"""The one model: input stage -> trunk -> output heads, composed from the config.

Shape legend: B batch, L length, D model width, V vocabulary, K draft tokens.

`Model` never branches on a technique: the input stage is
`multimodal.FRONTENDS[model.frontend.kind]` (text embedding, early-fusion patches
or codes, late-fusion encoder + adapter), the trunk is `nn.Transformer` (whose
projections come from `model.linear` and whose FFN from `model.ffn`), and the
output stage is `mtp.HEADS[model.mtp.kind]` (the next-token head alone, parallel
heads or sequential modules). The stages share the model's scope, so their
parameters sit beside the trunk's.

Parameter layout: the trunk lives at the top level for a text model without extra
heads, under `decoder` with multi-token heads, and under `lm` with an image
frontend. These are the layouts the earlier per-technique models had, kept so that a
fixed seed initializes the same weights (losses unchanged, scripts/model_parity.py)
and earlier checkpoints still restore.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from lattice import config as config_lib
from lattice import mtp, multimodal
from lattice.nn import transformer

Batch = dict[str, jax.Array]


def trunk_name(cfg: config_lib.ModelConfig) -> str | None:
  """Where the trunk's parameters live (None: the top level); see the module doc."""
  if cfg.frontend.kind != 'text':
    return 'lm'
  if cfg.mtp.kind != 'none':
    return 'decoder'
  return None


def _as_batch(inputs: Batch | jax.Array) -> Batch:
  return inputs if isinstance(inputs, dict) else {'inputs': inputs}


def _documents(batch: Batch) -> dict[str, jax.Array | None]:
  """The packed rows' document layout, as the output heads' keyword arguments:
  positions restarting per document and segment ids (None: one document per row,
  e.g. decoding)."""
  return {'positions_BxL': batch.get('positions'),
          'segment_ids_BxL': batch.get('segment_ids')}


class Model(nn.Module):
  """A decoder-only LM built from `cfg`'s input, trunk and output kinds.

  - `outputs(batch)` -> {'logits': main [B, L, V], 'mtp_logits': [extra heads'
    [B, L, V]...], 'tokens': ids the trunk saw [B, L]} (training);
  - `__call__(tokens or batch)` -> main logits [B, L, V] (eval, decoding; with
    `decode=True` the KV caches advance);
  - `spec_forward(tokens, choose)` -> (main logits, choose's outputs, draft logits
    [B, L, K, V]) for self-speculative decoding;
  - `trunk_hidden(batch)` and `head_logits(h, i, modality, positions, segment_ids)`
    for losses that run
    the heads one at a time.
  A batch is a dict: `inputs` int32[B, L], and for image frontends `images`,
  `patch_index`, `modality` (lattice.data.interleaved); `targets` feed sequential
  heads their teacher-forced future tokens.
  """
  cfg: config_lib.ModelConfig
  decode: bool = False

  def setup(self):
    cfg = self.cfg
    if cfg.vocab_size <= 0:
      raise config_lib.ConfigError(
          'model.vocab_size: must be resolved (> 0) before building the model')
    heads_cls = mtp.HEADS[cfg.mtp.kind]
    name = trunk_name(cfg)
    self.decoder = transformer.Transformer(heads_cls.trunk_config(cfg), self.decode,
                                           name=name)
    if name is None:
      nn.share_scope(self, self.decoder)
    self.input_stage = multimodal.FRONTENDS[cfg.frontend.kind](cfg, self.decode)
    nn.share_scope(self, self.input_stage)
    self.heads = heads_cls(cfg, self.decode)
    nn.share_scope(self, self.heads)

  def _hidden(self, batch: Batch):
    x_BxLxD, seen_BxL = self.input_stage(self.decoder.embed_tokens, batch)
    modality_BxL = batch.get('modality')
    h_BxLxD = self.decoder.trunk(x_BxLxD, batch.get('positions'), modality_BxL,
                                 batch.get('segment_ids'))
    return h_BxLxD, seen_BxL, modality_BxL

  def trunk_hidden(self, batch: Batch) -> jax.Array:
    """The trunk's output [B, L, D] (before the final norm)."""
    return self._hidden(_as_batch(batch))[0]

  def head_logits(self, h_BxLxD: jax.Array, i: int,
                  modality_BxL: jax.Array | None = None,
                  positions_BxL: jax.Array | None = None,
                  segment_ids_BxL: jax.Array | None = None) -> jax.Array:
    """Logits of output head i on the trunk output (heads that run independently);
    `positions`/`segment_ids` as in the batch (packed rows), None when decoding."""
    return self.heads.head_logits(h_BxLxD, i, self.decoder.logits, modality_BxL,
                                  positions_BxL, segment_ids_BxL)

  def outputs(self, batch: Batch) -> dict[str, Any]:
    """Every head's named logits, and the ids the trunk saw (for the loss)."""
    batch = _as_batch(batch)
    h_BxLxD, seen_BxL, modality_BxL = self._hidden(batch)
    logits = self.heads(h_BxLxD, self.decoder.logits, self.decoder.embed_tokens, batch,
                        modality_BxL)
    return {'logits': logits[0], 'mtp_logits': logits[1:], 'tokens': seen_BxL}

  def __call__(self, inputs: Batch | jax.Array) -> jax.Array:
    if self.is_initializing():  # create every stage's params (and KV caches)
      return self.outputs(inputs)['logits']
    batch = _as_batch(inputs)
    h_BxLxD, _, modality_BxL = self._hidden(batch)
    return self.heads.main(h_BxLxD, self.decoder.logits, modality_BxL,
                           **_documents(batch))

  def spec_forward(self, tokens_BxL: jax.Array, choose: Callable):
    """One decoding forward for self-speculative decoding (lattice/decode/speculative).

    `choose(main logits)` returns (next token at each position, ...). Returns (main
    logits [B, L, V], choose's outputs, draft logits [B, L, K, V]).
    """
    h_BxLxD, _, modality_BxL = self._hidden({'inputs': tokens_BxL})
    main_BxLxV = self.heads.main(h_BxLxD, self.decoder.logits, modality_BxL)
    chosen = choose(main_BxLxV)
    drafts = self.heads.drafts(h_BxLxD, chosen[0], self.decoder.logits,
                               self.decoder.embed_tokens, modality_BxL)
    return main_BxLxV, chosen, jnp.stack(drafts, axis=2)


def make_model(cfg: config_lib.ModelConfig, decode: bool = False) -> Model:
  """The model of `cfg` (every combination of linear, ffn, mtp and frontend kinds)."""
  return Model(cfg, decode)


def n_drafts(cfg: config_lib.ModelConfig) -> int:
  """Tokens the output heads draft per forward (0: no self-speculative decoding)."""
  return mtp.HEADS[cfg.mtp.kind].n_drafts(cfg)


def init_batch(cfg: config_lib.Config) -> Batch:
  """A one-row batch of zeros with every input `cfg`'s model reads (for `init`)."""
  L = cfg.data.seq_len
  return {'inputs': jnp.zeros((1, L), jnp.int32), 'targets': jnp.zeros((1, L), jnp.int32),
          'weights': jnp.zeros((1, L), jnp.float32),
          **multimodal.FRONTENDS[cfg.model.frontend.kind].init_inputs(cfg)}

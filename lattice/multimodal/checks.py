"""Checks of the multimodal config fields, run before anything compiles.

They read the frontend fields together with the data and FFN fields they constrain
(an image must fit a row; hard modality routing must leave each modality top_k
experts).
"""

from __future__ import annotations

from lattice import config as config_lib
from lattice.data import interleaved
from lattice.data import tokenizer as tokenizer_lib

_CHOICES = {'image_tokens': ('patches', 'discrete'),
            'modality_routing': ('learned', 'hard')}


def validate(cfg: config_lib.Config) -> None:
  """ConfigErrors for the multimodal fields (before anything compiles)."""
  f, m = cfg.model.frontend, cfg.model
  for name, choices in _CHOICES.items():
    if getattr(f, name) not in choices:
      raise config_lib.ConfigError(f'model.frontend.{name}: {getattr(f, name)!r} is not '
                                   f'one of {", ".join(choices)}')
  for name in ('image_size', 'patch_size', 'max_images', 'enc_d_model', 'enc_layers',
               'enc_heads', 'codebook_size'):
    if getattr(f, name) <= 0:
      raise config_lib.ConfigError(f'model.frontend.{name}: must be positive, got '
                                   f'{getattr(f, name)}')
  if f.image_size % f.patch_size:
    raise config_lib.ConfigError(f'model.frontend.patch_size: {f.patch_size} does not '
                                 f'divide model.frontend.image_size={f.image_size}')
  if f.enc_d_model % f.enc_heads or (f.enc_d_model // f.enc_heads) % 2:
    raise config_lib.ConfigError(f'model.frontend.enc_heads: {f.enc_heads} heads must '
                                 f'divide enc_d_model={f.enc_d_model} evenly')
  ratios = interleaved.ratios(f)
  if min(ratios) < 0 or sum(ratios) <= 0:
    raise config_lib.ConfigError(f'model.frontend.caption_ratio/interleaved_ratio/'
                                 f'text_ratio: must be >= 0 with a positive sum, got '
                                 f'{ratios}')
  image_block = interleaved.n_patches(f.image_size, f.patch_size) + 4  # BOS BOI .. EOI EOS
  if image_block > cfg.data.seq_len:
    raise config_lib.ConfigError(f'data.seq_len: {cfg.data.seq_len} cannot hold one image '
                                 f'({image_block} tokens with its markers)')
  if f.image_tokens == 'discrete':
    if f.kind != 'early':
      raise config_lib.ConfigError("model.frontend.image_tokens: 'discrete' needs "
                                   "model.frontend.kind='early'")
    need = tokenizer_lib.VOCAB_SIZE + f.codebook_size  # codebook.FIRST_CODE_ID
    if m.vocab_size and m.vocab_size < need:
      raise config_lib.ConfigError(f'model.vocab_size: {m.vocab_size} cannot hold '
                                   f'{f.codebook_size} image codes (needs >= {need})')
  if f.modality_routing == 'hard' and m.ffn.kind == 'moe':
    k = f.image_experts or m.ffn.n_experts // 2
    if not 0 < k < m.ffn.n_experts or m.ffn.top_k > min(k, m.ffn.n_experts - k):
      raise config_lib.ConfigError(
          f'model.frontend.image_experts: {k} image experts of {m.ffn.n_experts} leave '
          f'a modality fewer experts than model.ffn.top_k={m.ffn.top_k}')

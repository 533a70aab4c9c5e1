"""The frontend kinds' own fields of `model.frontend` and their checks.

Each input stage in `lattice.multimodal.FRONTENDS` names its fields as a frozen
dataclass in its class attribute `options` (`EarlyFusion.options = Early`,
`LateFusion.options = Late`; text embeddings have none). `lattice.config` adds them
to `model.frontend` (the keys stay flat: `--config.model.frontend.patch_size=16`)
and runs the selected kind's `check(cfg)` once when the config is built, before
anything compiles. The checks read the data fields the frontend constrains (an
image must fit a row). Hard modality routing is not a frontend field: it is the MoE
router `model.ffn.router='modality'` (`lattice/moe/modality_router.py`), which reads
the modality ids the frontend's batches carry.
"""

from __future__ import annotations

import dataclasses
import typing

from lattice.data import tokenizer as tokenizer_lib
from lattice.errors import ConfigError

if typing.TYPE_CHECKING:  # annotations only: lattice.config imports this module
  from lattice import config as config_lib

IMAGE_TOKENS = ('patches', 'discrete')


def _positive(names: tuple[str, ...], options: typing.Any) -> None:
  for name in names:
    if getattr(options, name) <= 0:
      raise ConfigError(f'model.frontend.{name}: must be positive, got '
                        f'{getattr(options, name)}')


@dataclasses.dataclass(frozen=True)
class Images:
  """The fields every image frontend shares: images and the document mix."""
  # Shapes images, cut into patches; each image fills BOI + (image_size/patch_size)^2
  # patch slots + EOI in the token stream.
  image_size: int = 32         # pixels per side of a square image
  patch_size: int = 8          # pixels per side of a square patch
  max_images: int = 4          # image slots per training sequence
  # Document mix (Shukor et al. 2025, arXiv 2504.07951: 45% captions, 45%
  # interleaved, 10% text-only).
  caption_ratio: float = 0.45  # share of caption documents
  interleaved_ratio: float = 0.45  # share of interleaved image+text documents
  text_ratio: float = 0.10     # share of text-only documents

  def check(self, cfg: config_lib.Config) -> None:
    """Raises ConfigError naming `model.frontend.<field>` (or the data field)."""
    _positive(('image_size', 'patch_size', 'max_images'), self)
    if self.image_size % self.patch_size:
      raise ConfigError(f'model.frontend.patch_size: {self.patch_size} does not divide '
                        f'model.frontend.image_size={self.image_size}')
    ratios = (self.caption_ratio, self.interleaved_ratio, self.text_ratio)
    if min(ratios) < 0 or sum(ratios) <= 0:
      raise ConfigError(f'model.frontend.caption_ratio/interleaved_ratio/text_ratio: '
                        f'must be >= 0 with a positive sum, got {ratios}')
    # BOS BOI, the patches, EOI EOS (lattice.data.interleaved.n_patches).
    image_block = (self.image_size // self.patch_size) ** 2 + 4
    if image_block > cfg.data.seq_len:
      raise ConfigError(f'data.seq_len: {cfg.data.seq_len} cannot hold one image '
                        f'({image_block} tokens with its markers)')


@dataclasses.dataclass(frozen=True)
class Early(Images):
  """Early fusion: 'patches' (a linear patch embedding) or 'discrete' (Chameleon-style
  k-means patch codes added to the vocabulary, their loss weighted image_loss)."""
  image_tokens: str = 'patches'  # patches | discrete (k-means codes in the vocabulary)
  codebook_size: int = 64      # discrete: k-means codes
  image_loss: float = 0.0      # discrete: loss weight of image-code targets

  def check(self, cfg: config_lib.Config) -> None:
    """The shared checks, then `image_tokens`, `codebook_size` and the vocabulary."""
    if self.image_tokens not in IMAGE_TOKENS:
      raise ConfigError(f'model.frontend.image_tokens: {self.image_tokens!r} is not one '
                        f'of {", ".join(IMAGE_TOKENS)}')
    super().check(cfg)
    _positive(('codebook_size',), self)
    if self.image_tokens == 'discrete':
      need = tokenizer_lib.VOCAB_SIZE + self.codebook_size  # codebook.FIRST_CODE_ID
      if cfg.model.vocab_size and cfg.model.vocab_size < need:
        raise ConfigError(f'model.vocab_size: {cfg.model.vocab_size} cannot hold '
                          f'{self.codebook_size} image codes (needs >= {need})')


@dataclasses.dataclass(frozen=True)
class Late(Images):
  """Late fusion: a ViT trained from scratch, then LLaVA's 2-layer GELU MLP adapter."""
  enc_d_model: int = 64        # ViT width
  enc_layers: int = 1          # ViT blocks
  enc_heads: int = 2           # ViT attention heads

  def check(self, cfg: config_lib.Config) -> None:
    """The shared checks, then the encoder's; discrete image tokens are early-only."""
    if cfg.model.frontend.image_tokens != 'patches':
      raise ConfigError(f"model.frontend.image_tokens: "
                        f"{cfg.model.frontend.image_tokens!r} needs "
                        f"model.frontend.kind='early' (late fusion reads patches)")
    super().check(cfg)
    _positive(('enc_d_model', 'enc_layers', 'enc_heads'), self)
    if self.enc_d_model % self.enc_heads or (self.enc_d_model // self.enc_heads) % 2:
      raise ConfigError(f'model.frontend.enc_heads: {self.enc_heads} heads must divide '
                        f'enc_d_model={self.enc_d_model} evenly')

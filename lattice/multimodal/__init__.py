"""Native multimodal models: early fusion (patches into the decoder) and late fusion
(ViT encoder + LLaVA adapter), as `model.frontend.kind` 'early' / 'late'."""

from lattice.multimodal import family as _family
from lattice.multimodal.early import EarlyFusion
from lattice.multimodal.family import evaluate, validate
from lattice.multimodal.late import LateFusion
from lattice.multimodal.patches import patchify, unpatchify

_family.register()

__all__ = ['EarlyFusion', 'LateFusion', 'evaluate', 'patchify', 'unpatchify', 'validate']

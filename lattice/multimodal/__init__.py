"""lattice.multimodal: the input stages of the model and their image paths.

Owns `FRONTENDS`, the table `model.frontend.kind` picks from: text embeddings only
('text'), early fusion (patches projected, or k-means patch codes, straight into
the decoder; Shukor et al. 2025, Chameleon) and late fusion (a ViT encoder + LLaVA's
adapter). Each kind's own fields of `model.frontend` are its `options` dataclass
(`options.Early`, `options.Late`), checked once when the config is built. Also the
patch helpers, the image path's FLOP count and the analyses the native-multimodal
experiment reports. Image+text batches are the data source `shapes`
(lattice.data.interleaved).
"""

from lattice.multimodal.early import EarlyFusion
from lattice.multimodal.late import LateFusion
from lattice.multimodal.patches import patchify, unpatchify
from lattice.multimodal.text import TextInput

FRONTENDS = {
    'text': TextInput,
    'early': EarlyFusion,
    'late': LateFusion,
}

__all__ = ['FRONTENDS', 'EarlyFusion', 'LateFusion', 'TextInput', 'patchify',
           'unpatchify']

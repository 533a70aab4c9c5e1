"""lattice.mtp: multi-token prediction output stages and their losses.

Owns `HEADS`, the table of output stages `model.mtp.kind` picks from: the plain
next-token head ('none'), parallel heads (Gloeckle et al. 2024, arXiv 2404.19737)
and sequential modules (DeepSeek-V3, arXiv 2412.19437). Each stage builds its
parameters beside the trunk's, returns its logits in order (main head first),
combines the per-head cross entropies into its loss, drafts tokens for
self-speculative decoding, and says how many extra passes its FLOPs count. Each
kind's own fields of `model.mtp` are its `options` dataclass (`options.Parallel`,
`options.Sequential`), checked once when the config is built.
"""

from lattice.mtp.heads import NextToken
from lattice.mtp.losses import head_ce
from lattice.mtp.losses import shifted_targets
from lattice.mtp.parallel import ParallelHeads
from lattice.mtp.sequential import SequentialHeads

HEADS = {
    'none': NextToken,
    'parallel': ParallelHeads,
    'sequential': SequentialHeads,
}

__all__ = ['HEADS', 'head_ce', 'shifted_targets']

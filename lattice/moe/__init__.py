"""lattice.moe: DeepSeek-style mixture of experts as an FFN kind.

Owns the MoE layer (`layer.MoE`: router, routed and shared experts, aux-loss-free
balancing), the router table, routing functions and balance losses (`router`:
`ROUTERS` holds softmax, sigmoid and hard modality routing, `modality_router`),
token dispatch (dropless blocks / ragged / grouped / tokamax, capacity; `dispatch`), expert parallelism
(`parallel`), and its config block (`options.MoEOptions`: the `model.ffn` fields of
kind 'moe', checked once when the config is built). The trunk picks it as
`model.ffn.kind='moe'` from its FFN table (`lattice.nn.ffns.FFNS`).
"""

from lattice.moe.layer import BIAS_COLLECTION
from lattice.moe.layer import MoE

__all__ = ['BIAS_COLLECTION', 'MoE']

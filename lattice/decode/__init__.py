"""lattice.decode: generating tokens from a trained model.

Owns KV-cache sampling (greedy, temperature, top-k, top-p, logit processors;
`sampling`), self-speculative decoding with a model's own multi-token heads
(`speculative`, greedy output identical to plain greedy), and grammar-constrained
decoding (JSON-schema automata; `constraints`, `schema`, `automaton`, `counted`). It builds
models through `lattice.model.make_model` and never imports the train or run layer.
"""

from lattice.decode.sampling import LogitProcessor
from lattice.decode.sampling import SamplingConfig
from lattice.decode.sampling import generate
from lattice.decode.sampling import sample_logits

__all__ = ['LogitProcessor', 'SamplingConfig', 'generate', 'sample_logits']

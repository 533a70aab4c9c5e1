"""lattice.decode: KV-cache sampling with logit processors."""

from lattice.decode.sampling import LogitProcessor
from lattice.decode.sampling import SamplingConfig
from lattice.decode.sampling import generate
from lattice.decode.sampling import sample_logits

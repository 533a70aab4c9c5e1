"""lattice.train: state, pure steps, the loop, checkpointing, optimizer, FLOP accounting."""

from lattice.train.loop import NonFiniteError
from lattice.train.loop import train_and_evaluate

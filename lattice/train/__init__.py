"""lattice.train: state, pure steps, the loop and the seed-vmapped trainer (one
recorder, a RunOutput each), checkpointing, optimizer, FLOP accounting."""

from lattice.train.loop import NonFiniteError
from lattice.train.loop import train_and_evaluate

"""lattice.train: the one training loop and what it keeps on disk.

Owns the train state (`state`: params, optimizer state and non-gradient model
collections in one pytree), the pure jitted step (`step`), the optimizer and
schedules (`optim`), the loop `train_and_evaluate` (`loop`) and the seed-vmapped
trainer (`vmap_seeds`) -- both record through one `recorder.Recorder` and return a
typed `RunOutput(metrics, state, setup)` --, Orbax checkpoints with the data
iterator state, their seals and preemption (`checkpoint`, `seal`, `preemption`),
run directories (`rundir`, `artifacts`), FLOP and MFU accounting (`flops`) and
profiling (`profile`). It names no technique: techniques report through their own
exports (e.g. MoE's eval summary).
"""

from lattice.train.loop import NonFiniteError
from lattice.train.loop import train_and_evaluate

__all__ = ['NonFiniteError', 'train_and_evaluate']

"""lattice.mtp: multi-token prediction, parallel heads and sequential modules.

Importing registers two model families (lattice/models.py), so
`model.mtp.kind='parallel'` (Gloeckle et al. 2024) and `'sequential'` (DeepSeek-V3)
train through the one train loop.
"""

from lattice import models
from lattice.mtp import flops
from lattice.mtp import parallel
from lattice.mtp import sequential
from lattice.mtp.losses import head_ce
from lattice.mtp.losses import shifted_targets
from lattice.mtp.parallel import ParallelMTP
from lattice.mtp.sequential import SequentialMTP

models.register_family('mtp', 'parallel', models.Family(
    make_model=lambda cfg, decode=False: parallel.ParallelMTP(cfg, decode),
    loss_fn=parallel.loss_fn, flops_per_token=flops.train_flops_per_token))
models.register_family('mtp', 'sequential', models.Family(
    make_model=lambda cfg, decode=False: sequential.SequentialMTP(cfg, decode),
    loss_fn=sequential.loss_fn, flops_per_token=flops.train_flops_per_token))

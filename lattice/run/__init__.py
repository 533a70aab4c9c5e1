"""The run layer: experiment arms over seeds, FLOP budgets, records, statistics, tables.

One idea per file. `arms` trains an experiment's arms x seeds through the train
loop (resumable per (arm, seed)); `budget` matches arms to a FLOP budget (FLOPs per
token counted once per arm); `records` is the Result schema, its provenance and
atomic 0644 writes; `stats` aggregates seeds and gives t intervals (Welch, paired,
factorial); `equal_flops` reads arms at the FLOPs the cheapest one reached;
`tables` renders markdown; `plots` draws PNGs; `sweep` expands grids into arms.
Experiment files use it through `lattice.experiment`; nothing here names a
technique.
"""

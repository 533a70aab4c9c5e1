"""lattice.data.tasks: generated documents, so nothing is downloaded.

Owns the procedural tasks that serve as data sources (each listed in
`lattice.data.sources.SOURCES` or `lattice.data.batches.BATCH_SOURCES`):
induction stories with random names (`induction`), modular arithmetic with in- and
out-of-distribution splits (`arithmetic`), fixed-width addition for Mixture-of-Agents
(`addition`), tool-call requests and their exact calls (`toolcalls`), and shapes
images with captions and image-only questions (`shapes`, read by the batch source
`shapes`). The checkable tasks carry their graders (`arithmetic.check`,
`addition.is_correct`); none imports the train layer.
"""

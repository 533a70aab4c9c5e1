"""lattice.nn: the decoder trunk and the layers every stage builds from.

Owns the Llama-style `transformer.Transformer` (pre-norm blocks of GQA attention and
an FFN from the table `ffns.FFNS`), the one projection factory
`layers.dense` (kinds from `lattice.quant.linears.LINEARS`), RMSNorm, embeddings,
activations, the cross-entropy and sown-collection helpers (`losses`) and the
decoder's FLOP count (`flops`). Import the modules themselves; this file re-exports
nothing, so technique packages can build on `layers` without importing the trunk.
"""

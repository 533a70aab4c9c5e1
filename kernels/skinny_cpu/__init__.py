"""Decoding's few-row float32 kernels on CPU through `jax.ffi`: the skinny matmul of the
1..8-row projections (`ops`) and the cache attention (`attention`)."""

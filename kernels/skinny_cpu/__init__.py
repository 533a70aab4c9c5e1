"""float32 skinny matmul on CPU (decoding's 1..8-row projections) through `jax.ffi`."""

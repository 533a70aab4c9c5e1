"""lattice: composable LLM techniques in JAX/Flax, each backed by paper reproductions."""

__version__ = '0.1.0'

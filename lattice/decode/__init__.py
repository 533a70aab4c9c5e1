"""lattice.decode."""

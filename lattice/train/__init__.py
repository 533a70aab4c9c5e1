"""lattice.train."""

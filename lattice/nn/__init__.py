"""lattice.nn."""

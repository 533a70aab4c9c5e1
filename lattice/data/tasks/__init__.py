"""lattice.data.tasks."""

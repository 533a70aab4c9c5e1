"""lattice.data.tasks: generated documents (listed in lattice.data.sources.SOURCES)."""

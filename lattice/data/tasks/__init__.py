"""lattice.data.tasks: generated data sources (importing registers them)."""

from lattice.data.tasks import arithmetic
from lattice.data.tasks import induction

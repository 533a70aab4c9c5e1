"""Agents: the Generator interface, an OpenAI-compatible server and client, and the
Mixture-of-Agents family (see generator.py, moa.py; the server is lattice.serve)."""

from lattice.agents.generator import Generator, LatticeGenerator, OpenAIClient  # noqa: F401

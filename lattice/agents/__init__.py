"""Agents: the Generator interface, an OpenAI-compatible server and client, the
Mixture-of-Agents family, tool calls (constrained decoding, grading, per-call FLOPs)
and routing requests to specialists by clustering (see generator.py,
moa.py, toolcall.py, calls.py, routing.py; the server is lattice.serve)."""

from lattice.agents.generator import Generator, LatticeGenerator, OpenAIClient  # noqa: F401

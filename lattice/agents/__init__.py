"""Agents: the Generator interface, an OpenAI-compatible server and client, the
Mixture-of-Agents family, tool calls (constrained decoding, grading, per-call FLOPs)
routing requests to specialists by clustering, aggregator data from real proposer
samples, and the open models agent modes import (see generator.py, moa.py,
toolcall.py, calls.py, routing.py, aggregate_data.py, open_models.py; the server is
lattice.serve)."""

from lattice.agents.generator import Generator, LatticeGenerator, OpenAIClient  # noqa: F401

__all__ = ['Generator', 'LatticeGenerator', 'OpenAIClient']

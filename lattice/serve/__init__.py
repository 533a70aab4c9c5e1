"""`lattice serve`: an OpenAI-compatible server with continuous batching (see app.py,
engine.py, server.py)."""

from lattice.serve.server import Server, find_runs, load_models, local_model, main

__all__ = ['Server', 'find_runs', 'load_models', 'local_model', 'main']

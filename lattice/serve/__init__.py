"""lattice.serve: `lattice serve`, an OpenAI-compatible server over trained runs.

Owns serving: the ASGI app (`app`, FastAPI on uvicorn) speaking the OpenAI
completions and chat API as clients use it (streaming, logprobs, tools, JSON
Schema / regex constraints), its request models (`protocol`), chat rendering
(`chat`), tool calls, parallel ones included: their grammar and parsing
(`tools`), continuous batching over a fixed set of KV-cache slots
(`engine`, `run`, `output`, `format`), one served model with its constraint cache
(`served`), and starting it (`server`). Decoding itself is `lattice.decode`.
"""

from lattice.serve.server import Server, find_runs, load_models, local_model, main

__all__ = ['Server', 'find_runs', 'load_models', 'local_model', 'main']

"""One request's generation: its choices as engine sequences, deltas as an async stream.

`Run` creates one `output.Choice` and one `engine.Sequence` per (prompt, choice),
submits them to the model's engine, and yields `output.Delta`s on the asyncio loop
(the engine thread hands them over with `call_soon_threadsafe`). Choice i of prompt
p has index p * n + i and samples with key (seed, index, step), so a seeded request
is reproducible whatever else the server is doing.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np

from lattice.decode import constraints as constraints_lib
from lattice.serve import engine as engine_lib
from lattice.serve import output
from lattice.serve import served as served_lib


@dataclasses.dataclass(frozen=True)
class Settings:
  max_tokens: int
  temperature: float = 1.0
  top_p: float = 1.0
  seed: int = 0
  stops: tuple[str, ...] = ()
  constraint: constraints_lib.Index | None = None
  prompt_logprobs: bool = False
  hold: str | None = None           # see output.Choice
  mask_hook: Callable | None = None  # see engine.Sequence


class Run:
  """Submits every choice of a request; `async for delta in run.deltas()`."""

  def __init__(self, served: served_lib.ServedModel, prompts: list[np.ndarray], n: int,
               s: Settings):
    self.loop = asyncio.get_running_loop()
    self.queue: asyncio.Queue[output.Delta] = asyncio.Queue()
    self.choices: list[output.Choice] = []
    self.seqs: list[engine_lib.Sequence] = []
    self.prompts = prompts
    self.table = served.table
    for p, ids in enumerate(prompts):
      for i in range(n):
        choice = output.Choice(p * n + i, list(s.stops), self._emit,
                               eos_id=served.tok.eos_id, hold=s.hold, table=served.table)
        seq = engine_lib.Sequence(
            ids, s.max_tokens, s.temperature, s.top_p, s.seed & 0x7FFFFFFF, p * n + i,
            on_token=choice.on_token, on_done=choice.on_done, mask_hook=s.mask_hook,
            want_prompt_logprobs=s.prompt_logprobs)
        seq.set_constraint(s.constraint)
        self.choices.append(choice)
        self.seqs.append(seq)
    for seq in self.seqs:
      served.engine.submit(seq)

  def _emit(self, delta: output.Delta) -> None:
    self.loop.call_soon_threadsafe(self.queue.put_nowait, delta)

  def cancel(self) -> None:
    """Stops decoding for every unfinished choice (a client went away)."""
    for choice in self.choices:
      choice.cancelled = True

  async def deltas(self) -> AsyncIterator[output.Delta]:
    """Deltas until every choice finished; a failed choice raises its error."""
    left = len(self.choices)
    while left:
      delta = await self.queue.get()
      if delta.error is not None:
        self.cancel()
        raise delta.error
      left -= delta.finish_reason is not None
      yield delta

  def usage(self) -> dict[str, Any]:
    """Tokens, not characters: each prompt counted once (BOS included), every
    generated token (EOS included) of every choice."""
    prompt = sum(len(ids) for ids in self.prompts)
    completion = sum(c.n_tokens for c in self.choices)
    return {'prompt_tokens': prompt, 'completion_tokens': completion,
            'total_tokens': prompt + completion}

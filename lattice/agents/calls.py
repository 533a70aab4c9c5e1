"""Tool calls from a trained model: batched greedy decoding of requests (optionally
constrained to the call schema) and the forward FLOPs of one call.
"""

from __future__ import annotations

from typing import Any

from lattice.agents import generator as generator_lib
from lattice.data import tokenizer as tok_lib
from lattice.data.tasks import toolcalls
from lattice.train import flops as flops_lib


def answer(cfg, variables: Any, requests: list[str], *, constrained: bool,
           batch: int, max_new: int) -> list[str]:
  """Greedy calls (text up to EOS) for `requests` from the model of Config `cfg`.

  Prompts are encoded with the run's tokenizer (`data.tokenizer`: byte or subword),
  decoded in batches of exactly `batch` rows per prompt length (one compiled shape
  per model and length) by `LatticeGenerator`; `constrained` compiles the call schema
  over that tokenizer's vocabulary (`lattice.data.tokenizer.vocab_bytes`).
  """
  gen = generator_lib.LatticeGenerator(
      variables, cfg.model, batch_size=batch,
      tokenizer=tok_lib.make_tokenizer(cfg.data.tokenizer))
  constraint = {'json_schema': toolcalls.call_schema()} if constrained else None
  return gen.generate([toolcalls.prompt_of(r) for r in requests], max_new, 0.0,
                      constraint)


def flops_per_call(params: Any, model_cfg, prompt_len: int, call_bytes: float,
                   axes: Any = None) -> float:
  """Forward FLOPs of one call: 2N per token (N active matmul parameters) plus
  attention, 4 L D T^2 / 2 over the T = prompt + call + EOS tokens (Kaplan et al.
  2020, arXiv 2001.08361 table 1, causal half). `params` boxed, or unboxed with their
  logical `axes` (`Setup.param_axes`)."""
  n = flops_lib.matmul_params(params, model_cfg, axes=axes)
  tokens = prompt_len + call_bytes + 1  # + EOS
  attn = 4 * model_cfg.n_layers * model_cfg.d_model * tokens * tokens / 2
  return 2 * n * tokens + attn

"""pass@k of a trained LM: sample completions for HumanEval/MBPP problems, execute them.

Gloeckle et al. 2024 (arXiv 2404.19737, §3.1, Fig. 3) compare n-token code models
by pass@1/10/100 on MBPP and HumanEval. This module samples `n` completions per
problem of a JSONL file in either format (`lattice.eval.code.load_problems`) from a
trained model with its own tokenizer (prompt after BOS, as training documents
start), cuts each completion at the first top-level stop sequence, and scores them
with `lattice.eval.code.evaluate` (sandboxed execution; unbiased pass@k of Chen et
al. 2021, arXiv 2107.03374, eq. 1). Nothing is downloaded: the problems come from
a local (or gs://) path.
"""

from __future__ import annotations

from typing import Sequence

import jax
import numpy as np

from lattice import config as config_lib
from lattice.data import tokenizer as tokenizer_lib
from lattice.decode import sampling
from lattice.eval import code

# Codex's stop sequences (Chen et al. 2021, §2.3): a completion ends where the next
# top-level statement begins.
STOP = ('\ndef ', '\nclass ', '\nif __name__', '\nprint(', '\n#')


def truncate(completion: str, stop: Sequence[str] = STOP) -> str:
  """`completion` cut at the first of `stop` (the whole text when none occurs)."""
  cut = min((i for i in (completion.find(s) for s in stop) if i >= 0),
            default=len(completion))
  return completion[:cut]


def sample_completions(cfg: config_lib.Config, variables: dict,
                       problems: Sequence[code.Problem], *, n: int,
                       max_new_tokens: int, temperature: float = 0.8,
                       top_p: float = 0.95, seed: int = 0) -> dict[str, list[str]]:
  """{task_id: n truncated completions}, sampled from the model in `variables`.

  A prompt longer than model.max_len - max_new_tokens keeps its last tokens.
  Raises ConfigError naming model.max_len when max_new_tokens leaves no room for a
  prompt.
  """
  if max_new_tokens >= cfg.model.max_len:
    raise config_lib.ConfigError(
        f'model.max_len: {cfg.model.max_len} leaves no room for a prompt before '
        f'{max_new_tokens} new tokens')
  tok = tokenizer_lib.make_tokenizer(cfg.data.tokenizer)
  s = sampling.SamplingConfig(temperature=temperature, top_p=top_p)
  out = {}
  key = jax.random.key(seed)
  for p in problems:
    ids = np.asarray(tok.encode(p.prompt, bos=True), np.int32)
    ids = ids[-(cfg.model.max_len - max_new_tokens):]
    key, sub = jax.random.split(key)
    new_NxT = sampling.generate(
        variables, np.repeat(ids[None], n, axis=0), sub, model_cfg=cfg.model,
        max_new_tokens=max_new_tokens, sampling=s, eos_id=tok.eos_id,
        pad_id=tok.pad_id if tok.pad_id is not None else 0)
    out[p.task_id] = [truncate(tok.decode(row)) for row in np.asarray(new_NxT)]
  return out


def pass_at_k(cfg: config_lib.Config, variables: dict, path: str, *, n: int,
              ks: Sequence[int] = (1, 10), max_new_tokens: int = 256,
              temperature: float = 0.8, top_p: float = 0.95, limit: int = 0,
              seed: int = 0, timeout_s: float = 10.0) -> dict[str, float]:
  """pass@k of the model on the problems in the JSONL at `path`.

  Args:
    cfg, variables: the trained run's typed config and model variables.
    path: HumanEval- or MBPP-format JSONL (local or gs://).
    n: samples per problem (pass@k is reported for each k <= n).
    limit: score only the first `limit` problems (0: all).

  Returns:
    {'pass@k': mean over problems, ..., 'code_problems': how many were scored}.

  Raises:
    ValueError: a malformed problem line (naming file and line).
    ConfigError: model.max_len too small for max_new_tokens.
  """
  problems = code.load_problems(path)
  problems = problems[:limit] if limit else problems
  completions = sample_completions(cfg, variables, problems, n=n,
                                   max_new_tokens=max_new_tokens,
                                   temperature=temperature, top_p=top_p, seed=seed)
  result = code.evaluate(problems, completions, ks=ks, timeout_s=timeout_s)
  return {**{k: v for k, v in result.items() if k.startswith('pass@')},
          'code_problems': float(result['n_problems'])}

"""lm-evaluation-harness adapter: a trained lattice run as an `lm_eval` model.

  lattice lm-eval --model_args workdir=RUN --tasks hellaswag,lambada_openai ...
  # = lm_eval's own CLI with the `lattice` model registered first; or from Python:
  lm_eval.simple_evaluate(model=LatticeLM(workdir=RUN), tasks=[...])

`loglikelihood` and `loglikelihood_rolling` score token log-probabilities with one
jitted forward per batch of rows padded to a power-of-two length bucket (so few
shapes compile); context longer than the model's `max_len` is cut from the left, and
`loglikelihood_rolling` scores long text in disjoint windows of `max_len` tokens,
each predicting from the previous window's tail (lm-eval's rolling-window rule).
`generate_until` decodes with the KV cache (`lattice.agents.generator`). Text is
prefixed with BOS, as training documents are.

The per-token log-probabilities are the training eval's: `token_logprobs` on a
training document gives the same mean loss as `lattice.train` evaluation of it.
"""

from __future__ import annotations

import glob
import json
import os
import sys
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from lm_eval.__main__ import cli_evaluate
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

from lattice.agents import generator as generator_lib
from lattice.errors import ConfigError
from lattice import model as model_lib
from lattice import storage

_ROWS = 8   # rows per scoring batch


def _bucket(n: int, cap: int) -> int:
  return min(1 << max(n - 1, 0).bit_length(), cap)


class Scorer:
  """Per-token log-probabilities of a lattice model over token rows."""

  def __init__(self, variables: dict, model_cfg, tok):
    self.tok, self.max_len = tok, model_cfg.max_len
    # The one model factory: MTP and multimodal runs score with their main head.
    model = model_lib.make_model(model_cfg)

    @jax.jit
    def logprobs(ids_BxL):
      logits_BxLxV = model.apply(variables, ids_BxL[:, :-1])
      logp_BxLxV = jax.nn.log_softmax(logits_BxLxV.astype(jnp.float32), axis=-1)
      targets_BxL = ids_BxL[:, 1:]
      got_BxL = jnp.take_along_axis(logp_BxLxV, targets_BxL[..., None], axis=-1)[..., 0]
      return got_BxL, jnp.argmax(logp_BxLxV, axis=-1) == targets_BxL

    self._logprobs = logprobs

  def token_logprobs(self, rows: Sequence[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """For each row of ids (at most max_len + 1), the log-prob of ids[1:] given the
    ids before (float32[n-1], nats) and whether each was the argmax (bool[n-1])."""
    out: list = [None] * len(rows)
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    for start in range(0, len(order), _ROWS):
      chunk = order[start:start + _ROWS]
      length = _bucket(max(len(rows[i]) for i in chunk), self.max_len + 1)
      batch = np.full((_ROWS, length), self.tok.pad_id, np.int32)
      for r, i in enumerate(chunk):
        batch[r, :len(rows[i])] = rows[i]
      logp, greedy = jax.device_get(self._logprobs(jnp.asarray(batch)))
      for r, i in enumerate(chunk):
        n = len(rows[i]) - 1
        out[i] = (np.asarray(logp[r, :n]), np.asarray(greedy[r, :n]))
    return out


@register_model('lattice')
class LatticeLM(LM):
  """A lattice run (`workdir`, optional checkpoint `step`) for lm-evaluation-harness."""

  def __init__(self, workdir: str, step: int | None = None, batch_size: int = 8, **_):
    super().__init__()
    self.gen = generator_lib.LatticeGenerator.from_workdir(
        workdir, step=None if step is None else int(step), batch_size=int(batch_size))
    self.tok = self.gen.tok
    self.scorer = Scorer(self.gen.variables, self.gen.model_cfg, self.tok)

  @classmethod
  def create_from_arg_string(cls, arg_string: str, additional_config=None):
    args = dict(kv.split('=', 1) for kv in arg_string.split(',') if kv)
    return cls(**args)

  def _context_and_target(self, context: str, continuation: str) -> tuple[np.ndarray, int]:
    ctx = self.tok.encode(context, bos=True)
    cont = self.tok.encode(continuation)
    ids = np.concatenate([ctx, cont])[-(self.scorer.max_len + 1):]
    return ids, len(cont)

  def loglikelihood(self, requests) -> list[tuple[float, bool]]:
    pairs = [self._context_and_target(*r.args) for r in requests]
    scored = self.scorer.token_logprobs([ids for ids, _ in pairs])
    return [(float(lp[-n:].sum()), bool(g[-n:].all())) for (_, n), (lp, g)
            in zip(pairs, scored)]

  def loglikelihood_rolling(self, requests) -> list[float]:
    out = []
    for r in requests:
      ids = self.tok.encode(r.args[0], bos=True)
      n, windows = self.scorer.max_len, []
      for s in range(1, len(ids), n):         # targets ids[s:e], disjoint windows
        e = min(s + n, len(ids))
        windows.append((ids[max(e - 1 - n, 0):e], e - s))
      scored = self.scorer.token_logprobs([w for w, _ in windows])
      out.append(float(sum(lp[-k:].sum() for (_, k), (lp, _) in zip(windows, scored))))
    return out

  def generate_until(self, requests) -> list[str]:
    out = []
    for r in requests:
      context, kwargs = r.args
      until = kwargs.get('until') or []
      until = [until] if isinstance(until, str) else list(until)
      budget = min(int(kwargs.get('max_gen_toks', 64)), self.gen.max_tokens_for(context))
      temperature = float(kwargs.get('temperature', 0.0)) if kwargs.get('do_sample') else 0.0
      text = self.gen.generate([context], max(budget, 1), temperature)[0]
      cut = min([text.find(s) for s in until if s and s in text], default=len(text))
      out.append(text[:cut])
    return out


def lm_eval_row(output: dict, step: int) -> dict:
  """An eval row for `records.add_evals` from lm_eval's results JSON.

  Args:
    output: lm_eval's output (`simple_evaluate`'s dict, or the `results_*.json` its
      CLI writes): `output['results'][task][metric]`, e.g. 'acc,none'.
    step: the checkpoint step that was evaluated.

  Returns:
    {'step', 'eval': {'lm_eval': [task, ...]}, 'lm_eval': {task: {metric: value}}},
    numeric metrics only (float).

  Raises:
    ValueError: `output` has no `results` mapping.
  """
  results = output.get('results') if isinstance(output, dict) else None
  if not isinstance(results, dict):
    raise ValueError('lm_eval output: no "results" mapping')
  scores = {task: {m: float(v) for m, v in metrics.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)}
            for task, metrics in results.items()}
  return {'step': int(step), 'eval': {'lm_eval': sorted(scores)}, 'lm_eval': scores}


def _option(argv: list[str], name: str) -> str | None:
  for i, a in enumerate(argv):
    if a == name and i + 1 < len(argv):
      return argv[i + 1]
    if a.startswith(name + '='):
      return a.split('=', 1)[1]
  return None


def main(argv: Sequence[str]) -> None:
  """`lattice lm-eval ARGS [--record]`: lm_eval's own CLI with the `lattice` model
  registered. With `--record` (and lm_eval's `--output_path DIR`), the scores are
  also added to the run's experiment `result.json` and `table.md` (as `lattice
  eval` rows: lattice.eval_cli.record), next to the training metrics.

  Raises:
    ConfigError: `--record` without `--output_path` or `--model_args workdir=RUN`.
  """
  from lattice import eval_cli  # pylint: disable=g-import-not-at-top  # the train stack
  argv = list(argv)
  record = '--record' in argv
  if record:
    argv.remove('--record')
    out_dir = _option(argv, '--output_path')
    model_args = dict(kv.split('=', 1) for kv in (_option(argv, '--model_args') or ''
                                                   ).split(',') if '=' in kv)
    if not out_dir or 'workdir' not in model_args:
      raise ConfigError('--record: needs --output_path DIR and --model_args '
                        'workdir=RUN (the scores are read back from DIR)')
  started = time.time()
  sys.argv = ['lm_eval', '--model', 'lattice', *argv]
  cli_evaluate()
  if not record:
    return
  files = [f for f in glob.glob(os.path.join(out_dir, '**', 'results_*.json'),
                                recursive=True) if os.path.getmtime(f) >= started - 1]
  if not files:
    raise ConfigError(f'--record: lm_eval wrote no results_*.json under {out_dir}')
  with open(max(files, key=os.path.getmtime)) as f:
    output = json.load(f)
  run = model_args['workdir']
  step = model_args.get('step')
  if step is None:  # LatticeLM restored the latest checkpoint: the largest step folder
    steps = [int(p.name) for p in (storage.path(run) / 'checkpoints').iterdir()
             if p.name.isdigit()]
    step = max(steps, default=0)
  folder = eval_cli.record(run, {run: lm_eval_row(output, int(step))})
  print(f'lm_eval scores of {run} (step {step}) added to '
        f'{folder if folder is not None else "no result.json (a bare run)"}')

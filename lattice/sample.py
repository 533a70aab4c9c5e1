"""`lattice sample`: text from a trained run, on the command line.

  lattice sample --workdir=runs/baseline --prompt 'def main(' [--max-tokens 64]
      [--temperature 0.8] [--top-p 0.95] [--top-k 20] [--seed 0] [--n 3]
      [--model baseline/seed_0] [--step 1200]

`--workdir` is a training run or an experiment workdir: with one run below it
(`<arm>/seed_<k>`) that run is used, with several `--model` picks one (the error
lists them), as in `lattice serve`. The checkpoint is restored through
`LatticeGenerator.from_workdir` (the run's `config.json`), the prompt is encoded
with the run's own tokenizer (`data.tokenizer` in that `config.json`: byte,
sentencepiece or hf) after a BOS token, as training documents start, and the
completion is decoded with it. Each sample is printed as prompt + completion.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Sequence

from etils import epath

from lattice import config as config_lib
from lattice import storage
from lattice.data import tokenizer as tokenizer_lib


def pick_run(workdir: str | os.PathLike[str], model: str | None) -> epath.Path:
  """The one run folder `workdir` names: itself, its single `<arm>/seed_<k>`, or
  the run `model`.

  Raises:
    ConfigError (one line, listing the runs found) when there is no checkpoint,
    `model` is not one of the runs, or several runs exist and `model` is None.
  """
  from lattice.serve.server import find_runs  # pylint: disable=g-import-not-at-top
  runs = find_runs(workdir)
  names = ', '.join(runs) or 'none'
  if model is not None:
    if model not in runs:
      raise config_lib.ConfigError(f'--model: no checkpoint in {storage.path(workdir) / model}; '
                                   f'runs found: {names}')
    return runs[model]
  if not runs:
    raise config_lib.ConfigError(f'--workdir: no checkpoint in {workdir} (is it a '
                                 'lattice run or experiment workdir?)')
  if len(runs) > 1:
    raise config_lib.ConfigError(f'--workdir: {workdir} holds {len(runs)} runs; pick '
                                 f'one with --model (runs found: {names})')
  return next(iter(runs.values()))


def run_tokenizer(run: str | os.PathLike[str]):
  """The tokenizer the run in `run` trained with (`data.tokenizer` of its
  config.json; `byte` when the file names none)."""
  path = storage.path(run) / 'config.json'
  if not path.is_file():
    raise config_lib.ConfigError(f'--workdir: {path} does not exist; is {run} a '
                                 'lattice training run?')
  spec = json.loads(path.read_text()).get('data', {}).get('tokenizer', 'byte')
  return tokenizer_lib.make_tokenizer(spec)


def sample(workdir: str | os.PathLike[str], prompt: str, *, max_tokens: int = 64,
           temperature: float = 0.8, top_p: float = 1.0, top_k: int = 0,
           seed: int = 0, n: int = 1, model: str | None = None,
           step: int | None = None) -> list[str]:
  """`n` completions (text after `prompt`, up to EOS or `max_tokens` tokens).

  temperature 0 is greedy; top_k 0 and top_p 1 are off. The same `seed` gives the
  same texts. Raises ConfigError naming the flag for a bad value, a missing run or
  a prompt + max_tokens longer than the model's `max_len`.
  """
  if n < 1:
    raise config_lib.ConfigError(f'--n: must be >= 1, got {n}')
  if max_tokens < 1:
    raise config_lib.ConfigError(f'--max-tokens: must be >= 1, got {max_tokens}')
  if temperature < 0:
    raise config_lib.ConfigError(f'--temperature: must be >= 0, got {temperature}')
  if not 0.0 <= top_p <= 1.0:
    raise config_lib.ConfigError(f'--top-p: must be in [0, 1] (1 is off), got {top_p}')
  if top_k < 0:
    raise config_lib.ConfigError(f'--top-k: must be >= 0 (0 is off), got {top_k}')
  run = pick_run(workdir, model)
  tok = run_tokenizer(run)
  from lattice.agents import generator  # pylint: disable=g-import-not-at-top
  gen = generator.LatticeGenerator.from_workdir(run, step=step, seed=seed, top_k=top_k,
                                                top_p=top_p, tokenizer=tok)
  room = gen.max_tokens_for(prompt)
  if max_tokens > room:
    raise config_lib.ConfigError(
        f'--max-tokens: {max_tokens} does not fit after the prompt; the model\'s '
        f'max_len {gen.model_cfg.max_len} leaves {max(room, 0)}')
  return gen.generate([prompt] * n, max_tokens, temperature)


def main(argv: Sequence[str]) -> None:
  """`lattice sample ...`; user errors raise ConfigError (one line, exit 2)."""
  p = argparse.ArgumentParser(
      prog='lattice sample', description='Print text sampled from a trained run '
      '(prompt + completion), encoded and decoded with the run\'s tokenizer.')
  p.add_argument('--workdir', required=True, help='a training run, or an experiment '
                 'workdir holding one run (else name it with --model)')
  p.add_argument('--prompt', required=True, help='the text to continue')
  p.add_argument('--model', default=None, help='the run under --workdir, e.g. '
                 'baseline/seed_0')
  p.add_argument('--max-tokens', type=int, default=64, help='new tokens per sample')
  p.add_argument('--temperature', type=float, default=0.8, help='0 is greedy')
  p.add_argument('--top-p', type=float, default=1.0, help='nucleus mass; 1 is off')
  p.add_argument('--top-k', type=int, default=0, help='0 is off')
  p.add_argument('--seed', type=int, default=0, help='same seed, same samples')
  p.add_argument('--n', type=int, default=1, help='number of samples')
  p.add_argument('--step', type=int, default=None, help='checkpoint step '
                 '(default: the latest)')
  args = p.parse_args(argv)
  texts = sample(args.workdir, args.prompt, max_tokens=args.max_tokens,
                 temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
                 seed=args.seed, n=args.n, model=args.model, step=args.step)
  for i, text in enumerate(texts):
    if len(texts) > 1:
      print(f'--- sample {i + 1}/{len(texts)} ---')
    print(args.prompt + text, flush=True)

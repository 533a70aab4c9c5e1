"""Running the app: `Server` (uvicorn in a thread, for tests and notebooks) and
`lattice serve` (`main`), which finds the runs of a workdir and serves them.

  lattice serve --workdir=runs/baseline              every <arm>/seed_<k> with a
                                                     checkpoint, ids like baseline/seed_0
  lattice serve --workdir=runs/baseline --model=baseline/seed_0
  lattice serve --workdir=runs/x --slots 32 --warmup --port 8000
  lattice serve --workdir=runs/x --max-tool-calls 4   # tool calls per chat turn
"""

from __future__ import annotations

import argparse
import socket
import threading
from collections.abc import Sequence
from pathlib import Path

import uvicorn

from lattice import config as config_lib
from lattice.data import tokenizer as tokenizer_lib
from lattice.serve import app as app_lib
from lattice.serve import engine as engine_lib
from lattice.serve import protocol
from lattice.serve import served as served_lib
from lattice.serve import tools
from lattice.train.rundir import find_runs  # pylint: disable=unused-import  (re-exported)



def local_model(name: str, variables: dict, model_cfg: config_lib.ModelConfig, *,
                slots: int = 8, template: str = 'raw', warmup: bool = False,
                tok=None) -> served_lib.ServedModel:
  """A ServedModel over in-memory params; `tok` is the run's tokenizer (default:
  bytes); `warmup` compiles now. Raises ConfigError naming data.tokenizer when the
  vocabulary has no BOS or EOS token (prompts start with BOS; EOS ends an answer)."""
  tok = tok if tok is not None else tokenizer_lib.ByteTokenizer()
  if tok.eos_id is None or tok.bos_id is None:
    raise config_lib.ConfigError(f'data.tokenizer: {name}: serving needs a vocabulary '
                                 'with BOS and EOS tokens')
  engine = engine_lib.Engine(variables, model_cfg, slots=slots, eos_id=tok.eos_id,
                             pad_id=tok.pad_id)
  if warmup:
    engine.warmup()
  return served_lib.ServedModel(name, engine.start(), template, tok)


class Server:
  """`with Server(models) as s:` serves on `s.url` (uvicorn, in a daemon thread).

  `max_tool_calls` bounds the tool calls of one chat turn (see create_app).
  """

  def __init__(self, models: Sequence[served_lib.ServedModel], *,
               host: str = '127.0.0.1', port: int = 0,
               max_tool_calls: int = tools.DEFAULT_MAX_CALLS):
    self.models = list(models)
    self.app = app_lib.create_app(self.models, max_tool_calls=max_tool_calls)
    self._sock = socket.socket(socket.AF_INET6 if ':' in host else socket.AF_INET)
    self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    self._sock.bind((host, port))
    self.host, self.port = self._sock.getsockname()[:2]
    self._server = uvicorn.Server(uvicorn.Config(self.app, log_level='warning',
                                                 timeout_keep_alive=30))
    self._thread: threading.Thread | None = None

  @property
  def url(self) -> str:
    return f'http://{self.host}:{self.port}'

  def start(self) -> Server:
    self._thread = threading.Thread(target=self._server.run, args=([self._sock],),
                                    daemon=True, name='lattice-uvicorn')
    self._thread.start()
    while not self._server.started:
      if not self._thread.is_alive():
        raise RuntimeError(f'lattice serve: the server on {self.url} failed to start')
      self._thread.join(0.01)
    return self

  def serve_forever(self) -> None:
    self._server.run([self._sock])

  def close(self) -> None:
    self._server.should_exit = True
    if self._thread is not None:
      self._thread.join()
    for m in self.models:
      m.engine.stop()
    self._sock.close()

  def __enter__(self) -> Server:
    return self.start()

  def __exit__(self, *exc) -> None:
    self.close()


def _pick_runs(workdir: str, model: str | None) -> dict[str, Path]:
  runs = find_runs(workdir)
  names = ', '.join(runs) or 'none'
  if model is not None:
    if model not in runs:
      raise config_lib.ConfigError(
          f'no checkpoint in {Path(workdir) / model}; runs found: {names}')
    return {model: runs[model]}
  if not runs:
    raise config_lib.ConfigError(f'no checkpoint in {workdir}; runs found: {names}')
  return runs


def _load(run: Path, cfg, step: int | None):
  from lattice.agents import generator  # the train stack only when serving runs
  try:
    gen = generator.LatticeGenerator.from_workdir(run, cfg, step=step)
  except config_lib.ConfigError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    raise config_lib.ConfigError(f'cannot restore {run}: {type(e).__name__}: '
                                 f'{str(e).splitlines()[0] if str(e) else ""}') from None
  return gen.variables, gen.model_cfg, gen.tok


def load_models(workdir: str, model: str | None = None, cfg=None, *,
                step: int | None = None, name: str | None = None, slots: int = 8,
                template: str = 'raw', warmup: bool = False) -> list[served_lib.ServedModel]:
  """The ServedModels of `workdir`'s runs (or of run `model` only); `name` renames a
  single run. Raises ConfigError naming what is missing."""
  runs = _pick_runs(workdir, model)
  if name and len(runs) > 1:
    raise config_lib.ConfigError('--model-name: names a single run; pick one with '
                                 f'--model (runs found: {", ".join(runs)})')
  models = []
  for run_id, run in runs.items():
    variables, model_cfg, tok = _load(run, cfg, step)
    models.append(local_model(name or run_id, variables, model_cfg, slots=slots,
                              template=template, warmup=warmup, tok=tok))
  return models


def main(argv: list[str]) -> None:
  """`lattice serve --workdir DIR [--model ID] [--config FILE.py:MODE] ...`; user
  errors raise ConfigError (the CLI prints one line and exits 2)."""
  parser = argparse.ArgumentParser(
      prog='lattice serve', description='Serve trained lattice runs over an '
      'OpenAI-compatible API (/v1/models, /v1/completions, /v1/chat/completions).')
  parser.add_argument('--workdir', required=True, help='a training run, or an '
                      'experiment workdir whose <arm>/seed_<k> runs are all served')
  parser.add_argument('--model', default=None, help='serve only this run id, e.g. '
                      'baseline/seed_0 (see GET /v1/models)')
  parser.add_argument('--config', default=None,
                      help='the runs\' FILE.py:MODE (default: each RUN/config.json)')
  parser.add_argument('--host', default='127.0.0.1',
                      help='bind address (default loopback; 0.0.0.0 exposes it)')
  parser.add_argument('--port', type=int, default=8000)
  parser.add_argument('--model-name', default=None,
                      help='the id of a single served run (default: its path)')
  parser.add_argument('--chat-template', choices=('raw', 'tagged'), default='raw')
  parser.add_argument('--step', type=int, default=None, help='checkpoint step')
  parser.add_argument('--slots', type=int, default=8,
                      help='sequences decoded together per model (1: one at a time)')
  parser.add_argument('--warmup', action='store_true',
                      help='compile every prompt bucket and the decode step at start')
  parser.add_argument('--max-tool-calls', type=int, default=tools.DEFAULT_MAX_CALLS,
                      help='most tool calls in one chat turn (default '
                      f'{tools.DEFAULT_MAX_CALLS}); a request may ask for fewer '
                      'with max_tool_calls, or one with parallel_tool_calls=false')
  args = parser.parse_args(argv)
  if not 1 <= args.max_tool_calls <= protocol.MAX_TOOL_CALLS:
    raise config_lib.ConfigError(f'--max-tool-calls: expected 1..'
                                 f'{protocol.MAX_TOOL_CALLS}, got {args.max_tool_calls}')
  cfg = None
  if args.config:
    from lattice.run import config_file  # pylint: disable=g-import-not-at-top
    cfg = config_lib.build(config_file.load(args.config)[1])
  models = load_models(args.workdir, args.model, cfg, step=args.step,
                       name=args.model_name, slots=args.slots,
                       template=args.chat_template, warmup=args.warmup)
  try:
    server = Server(models, host=args.host, port=args.port,
                    max_tool_calls=args.max_tool_calls)
  except OSError as e:
    raise config_lib.ConfigError(f'--port: cannot listen on {args.host}:{args.port}: '
                                 f'{e.strerror or e}') from None
  print(f'[lattice] serving {", ".join(m.name for m in models)} on {server.url}/v1',
        flush=True)
  try:
    server.serve_forever()
  except KeyboardInterrupt:
    pass

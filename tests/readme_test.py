"""The README's Python snippets that load a run run as written.

Each ```python block that calls `artifacts.load_run('PATH')` is executed verbatim in
a folder where every PATH it names holds a tiny trained run (BitNet where the path
names a b158 arm, float otherwise), so a snippet with an undefined name or a
missing import fails here.
"""

import dataclasses
import functools
import pathlib
import re

import jax
import pytest

from lattice import config as config_lib
from lattice.quant import nanoquant
from lattice.train import loop

from conftest import tiny_config

README = pathlib.Path(__file__).resolve().parent.parent / 'README.md'
_BLOCK = re.compile(r'```python\n(.*?)```', re.S)
_RUN = re.compile(r"artifacts\.load_run\('([^']+)'\)")


def _snippets() -> list[str]:
  return [b for b in _BLOCK.findall(README.read_text()) if _RUN.search(b)]


def test_the_readme_has_the_loading_snippets():
  paths = [p for b in _snippets() for p in _RUN.findall(b)]
  assert 'runs/baseline/baseline/seed_0' in paths  # the quickstart's run
  assert any('b158' in p for p in paths)


@pytest.mark.parametrize('index', range(len(_snippets())))
def test_snippet_runs_as_written(index, tmp_path, monkeypatch):
  snippet = _snippets()[index]
  for path in _RUN.findall(snippet):
    cfg = config_lib.build(tiny_config(
        model={'vocab_size': 272, 'max_len': 64, 'n_layers': 1,
               'linear': {'kind': 'bitnet' if 'b158' in path else 'float'}},
        train={'steps': 1, 'log_every': 1, 'eval_every': 0, 'progress': False,
               'flops_peak': 1e9},
        optimizer={'warmup_steps': 1}, checkpoint={'every': 1, 'keep': 1}))
    loop.train_and_evaluate(cfg, tmp_path / path, devices=jax.devices()[:1])
  monkeypatch.chdir(tmp_path)
  # NanoQuant's tuning loops at 2 steps each: the snippet's calls, not its quality.
  monkeypatch.setattr(nanoquant, 'CompressConfig', functools.partial(
      dataclasses.replace, nanoquant.CompressConfig(float_steps=2, block_steps=2)))
  namespace: dict = {}
  exec(compile(snippet, f'README.md python block {index}', 'exec'), namespace)  # pylint: disable=exec-used
  assert 'new' in namespace or 'qparams' in namespace

"""`lattice sample` over a tiny trained run in an experiment workdir."""

import jax
import numpy as np
import pytest

from lattice import cli
from lattice import config as config_lib
from lattice import sample as sample_lib
from lattice.data import tokenizer as tokenizer_lib
from lattice.decode import sampling
from lattice.train import artifacts, loop

from conftest import tiny_config


@pytest.fixture(scope='module')
def exp_dir(tmp_path_factory):
  """An experiment workdir holding one tiny trained run, baseline/seed_0."""
  cfg = config_lib.build(tiny_config(
      model={'vocab_size': 272, 'max_len': 64},
      train={'steps': 2, 'log_every': 1, 'eval_every': 0, 'progress': False,
             'flops_peak': 1e9},
      optimizer={'warmup_steps': 1}, checkpoint={'every': 2, 'keep': 1}))
  workdir = tmp_path_factory.mktemp('exp')
  loop.train_and_evaluate(cfg, workdir / 'baseline' / 'seed_0',
                          devices=jax.devices()[:1])
  return workdir


def test_greedy_cli_prints_the_runs_own_greedy_decode(exp_dir, capsys):
  prompt = 'def f('
  cli.main(['sample', f'--workdir={exp_dir}', '--prompt', prompt, '--max-tokens', '8',
            '--temperature', '0'])
  printed = capsys.readouterr().out
  # The reference: the checkpoint loaded by artifacts.load_run, decoded by
  # sampling.generate directly from BOS + the prompt's bytes.
  cfg, params = artifacts.load_run(exp_dir / 'baseline' / 'seed_0')
  tok = tokenizer_lib.ByteTokenizer()
  ids = np.asarray(tok.encode(prompt, bos=True))[None]
  out = np.asarray(sampling.generate({'params': params}, ids, jax.random.key(0),
                                     model_cfg=cfg.model, max_new_tokens=8,
                                     sampling=sampling.SamplingConfig(0.0),
                                     eos_id=tok.eos_id, pad_id=tok.pad_id))[0]
  stop = np.flatnonzero(out == tok.eos_id)
  want = tok.decode_bytes(out[:stop[0]] if stop.size else out).decode('utf-8', 'replace')
  assert printed == prompt + want + '\n'


def test_n_samples_are_reproducible_by_seed(exp_dir):
  kw = dict(max_tokens=6, temperature=1.0, n=3)
  a = sample_lib.sample(exp_dir, 'ab', seed=1, **kw)
  assert len(a) == 3
  assert sample_lib.sample(exp_dir, 'ab', seed=1, **kw) == a


@pytest.mark.parametrize('argv, needle', [
    (['--n', '0'], '--n: must be >= 1'),
    (['--top-p', '1.5'], '--top-p: must be in [0, 1]'),
    (['--max-tokens', '1000'], '--max-tokens: 1000 does not fit'),
    (['--model', 'moe/seed_0'], 'runs found: baseline/seed_0'),
])
def test_bad_flags_are_one_line(exp_dir, capsys, argv, needle):
  with pytest.raises(SystemExit) as e:
    cli.main(['sample', f'--workdir={exp_dir}', '--prompt', 'x', *argv])
  assert e.value.code == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith('lattice: error: ') and '\n' not in err and needle in err


def test_several_runs_ask_for_one(tmp_path):
  for arm in ('baseline', 'moe'):
    (tmp_path / arm / 'seed_0' / 'checkpoints' / '4').mkdir(parents=True)
  with pytest.raises(config_lib.ConfigError, match=r'holds 2 runs; pick one with '
                     r'--model \(runs found: baseline/seed_0, moe/seed_0\)'):
    sample_lib.pick_run(tmp_path, None)
  assert sample_lib.pick_run(tmp_path, 'moe/seed_0') == tmp_path / 'moe' / 'seed_0'
  with pytest.raises(config_lib.ConfigError, match='no checkpoint'):
    sample_lib.pick_run(tmp_path / 'empty', None)

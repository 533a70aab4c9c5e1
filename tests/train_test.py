"""The train loop: resume == uninterrupted (bitwise), non-finite handling, outputs."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lattice import config as config_lib
from lattice.data import pipeline, tokenizer
from lattice.train import checkpoint, loop, optim, step as step_lib

from conftest import tiny_config


def _cfg(**sections):
  return config_lib.build(tiny_config(**sections))


def _next_batch_after(cfg, workdir):
  """The batch the restored data iterator yields next."""
  it = pipeline.make_train_iterator(cfg.data, tokenizer.ByteTokenizer(),
                                    seed=cfg.data.shuffle_seed)
  setup = loop.build(cfg, devices=jax.devices()[:1])
  ckpt = checkpoint.Checkpointer(workdir / 'checkpoints', cfg.checkpoint)
  ckpt.restore(setup.abstract_state, it)
  ckpt.close()
  return next(it)


def test_resume_equals_uninterrupted_bitwise(tmp_path, one_device):
  cfg = _cfg()  # 6 steps, checkpoint every 3
  full = loop.train_and_evaluate(cfg, tmp_path / 'full', devices=one_device)
  part = loop.train_and_evaluate(cfg, tmp_path / 'resumed', stop_after=3,
                                 devices=one_device)
  assert part['preempted'] and part['steps'] == 3
  resumed = loop.train_and_evaluate(cfg, tmp_path / 'resumed', devices=one_device)
  assert resumed.metrics['steps'] == 6 and not resumed.metrics['preempted']
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
               full.state.params, resumed.state.params)
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
               full.state.opt_state, resumed.state.opt_state)
  assert full.metrics['val_loss'] == resumed.metrics['val_loss']
  a = _next_batch_after(cfg, tmp_path / 'full')
  b = _next_batch_after(cfg, tmp_path / 'resumed')
  np.testing.assert_array_equal(a['inputs'], b['inputs'])


def test_outputs_metrics_and_accounting(tmp_path, one_device):
  out = loop.train_and_evaluate(_cfg(train={'eval_every': 3}), tmp_path, devices=one_device)
  lines = [json.loads(l) for l in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
  assert [l['step'] for l in lines if 'loss' in l] == [2, 4, 6]
  assert [h['step'] for h in out.metrics['history']] == [3, 6]
  assert out.metrics['val_bpb'] > 0 and np.isfinite(out.metrics['val_loss'])
  assert out.metrics['tokens'] == 6 * 8 * 16
  # 6N + 12 * layers * L * attention width (PaLM App. B).
  n_matmul = sum(x.size for x in jax.tree.leaves(out.state.params) if x.ndim >= 2)
  assert out.metrics['flops_per_token'] == 6 * n_matmul + 12 * 2 * 16 * 32
  assert out.metrics['tokens_per_s'] > 0 and 0 < out.metrics['mfu']
  assert json.loads((tmp_path / 'final_metrics.json').read_text())['steps'] == 6


def _nan_loss(model, variables, batch, mutable):
  loss, aux = step_lib.lm_loss(model, variables, batch, mutable)
  return loss * jnp.nan, aux


def test_nonfinite_stops_naming_the_step_and_saves_nothing(tmp_path, one_device):
  with pytest.raises(loop.NonFiniteError, match='non-finite loss, grad_norm at step 1'):
    loop.train_and_evaluate(_cfg(), tmp_path, loss_fn=_nan_loss, devices=one_device)
  assert checkpoint.Checkpointer(tmp_path / 'checkpoints',
                                 config_lib.CheckpointConfig()).latest_step() is None


def test_nonfinite_skip_leaves_params_untouched(tmp_path, one_device):
  cfg = _cfg(train={'nonfinite': 'skip'})
  out = loop.train_and_evaluate(cfg, tmp_path, loss_fn=_nan_loss, devices=one_device)
  init = loop.build(cfg, devices=one_device).init(jax.random.key(cfg.train.seed))
  assert out.metrics['steps'] == 6
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
               out.state.params, init.params)


@pytest.mark.parametrize('schedule', ['constant', 'cosine', 'wsd', 'two_stage'])
def test_schedules(schedule):
  o = config_lib.OptimizerConfig(lr=1.0, warmup_steps=10, schedule=schedule,
                                 min_lr_ratio=0.1)
  lr = optim.lr_schedule(o, 100)
  assert float(lr(0)) == 0.0 and abs(float(lr(10)) - 1.0) < 1e-6
  if schedule == 'constant':
    assert float(lr(99)) == 1.0
  elif schedule == 'wsd':
    assert float(lr(79)) == 1.0 and abs(float(lr(100)) - 0.1) < 1e-6
  elif schedule == 'cosine':
    assert abs(float(lr(100)) - 0.1) < 1e-6
  else:  # BitNet two-stage: an abrupt drop at the midpoint, decay off after it.
    assert float(lr(49)) - float(lr(50)) > 0.1
    wd = optim.weight_decay_schedule(o, 100)
    assert float(wd(49)) == pytest.approx(0.1) and float(wd(50)) == 0.0


def test_decay_mask_skips_norms_and_embeddings():
  params = {'embed': {'embedding': jnp.ones((4, 2))}, 'norm': {'scale': jnp.ones(2)},
            'dense': {'kernel': jnp.ones((2, 2))}}
  mask = optim.decay_mask(params)
  assert mask == {'embed': {'embedding': False}, 'norm': {'scale': False},
                  'dense': {'kernel': True}}


_SIGTERM_SCRIPT = '''
import json, sys
from lattice.train import loop
cfg = json.loads(sys.argv[2])
out = loop.train_and_evaluate(cfg, sys.argv[1])
print('RESULT', json.dumps({'steps': out.metrics['steps'], 'preempted': out.metrics['preempted']}))
'''


def test_sigterm_saves_and_exits_cleanly(tmp_path):
  import signal
  import subprocess
  import sys
  import time
  cfg = tiny_config(train={'steps': 100_000, 'log_every': 1},
                    checkpoint={'every': 100_000})
  cmd = [sys.executable, '-c', _SIGTERM_SCRIPT, str(tmp_path), json.dumps(cfg)]
  proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  metrics = tmp_path / 'metrics.jsonl'
  deadline = time.time() + 120
  while not (metrics.exists() and metrics.read_text().count('\n') >= 3):
    assert proc.poll() is None, proc.communicate()
    assert time.time() < deadline, 'training never started'
    time.sleep(0.2)
  proc.send_signal(signal.SIGTERM)
  t0 = time.time()
  stdout, stderr = proc.communicate(timeout=60)
  assert proc.returncode == 0, stderr[-2000:]
  assert time.time() - t0 < 30  # saved and exited promptly
  result = json.loads(stdout.split('RESULT ')[1])
  assert result['preempted'] and 3 <= result['steps'] < 100_000
  ckpt = checkpoint.Checkpointer(tmp_path / 'checkpoints', config_lib.CheckpointConfig())
  assert ckpt.latest_step() == result['steps']  # the interrupted step was saved
  ckpt.close()


def test_rerunning_a_finished_run_keeps_its_training_measurements(tmp_path, one_device):
  first = loop.train_and_evaluate(_cfg(), tmp_path, devices=one_device)
  again = loop.train_and_evaluate(_cfg(), tmp_path, devices=one_device)
  assert again['steps'] == 6
  for key in ('train_loss', 'tokens_per_s', 'mfu', 'val_loss'):
    assert again[key] == pytest.approx(first[key]), key
  assert again['wall_s'] >= first['wall_s']  # cumulative over sessions


def test_accounting_and_decay_mask_are_the_same_with_scanned_layers():
  import flax.linen as nn
  from lattice.nn import transformer
  from lattice.train import flops
  cfg = loop.resolve(_cfg(model={'linear': {'use_bias': True}}))
  tokens = jnp.zeros((1, 8), jnp.int32)
  counts = []
  for scan in (False, True):
    model_cfg = dataclasses.replace(cfg.model, scan_layers=scan)
    boxed = transformer.Transformer(model_cfg).init(jax.random.key(0), tokens)['params']
    params = nn.unbox(boxed)
    mask = optim.decay_mask(params)
    decayed = sum(x.size for x, m in zip(jax.tree.leaves(params), jax.tree.leaves(mask)) if m)
    counts.append((flops.train_flops_per_token(boxed, model_cfg, 16), decayed))
  assert counts[0] == counts[1]

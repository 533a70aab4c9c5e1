"""A run survives its faults: preemption, kill -9 mid-save, corrupt checkpoints, a full
disk, NaN, and bad input. Each test injects the fault for real and checks that no
work is lost: the resumed run equals the uninterrupted one bitwise (params,
optimizer state and the data position).

One uninterrupted reference run is shared; all runs (in this process and in the
subprocesses) share one persistent XLA compilation cache, so the same tiny program
compiles once (and the cached executable makes in- and out-of-process runs
bitwise comparable).
"""

import dataclasses
import errno
import json
import os
import pathlib
import random
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from etils import epath

from lattice import config as config_lib
from lattice.data import pipeline, tokenizer
from lattice.train import checkpoint, loop, step as step_lib

from conftest import tiny_config

ROOT = pathlib.Path(__file__).resolve().parents[1]
STEPS, EVERY = 8, 2


def _cfg():
  return tiny_config(train={'steps': STEPS, 'log_every': 1},
                     checkpoint={'every': EVERY, 'keep': 3})


@pytest.fixture(scope='module', autouse=True)
def compile_cache(tmp_path_factory):
  from jax.experimental.compilation_cache import compilation_cache as cc
  names = ('jax_compilation_cache_dir', 'jax_persistent_cache_min_compile_time_secs',
           'jax_persistent_cache_min_entry_size_bytes')
  old = {n: getattr(jax.config, n) for n in names}
  folder = tmp_path_factory.mktemp('xla_cache')
  for n, v in zip(names, (str(folder), 0, 0)):
    jax.config.update(n, v)
  cc.reset_cache()
  yield folder
  for n, v in old.items():
    jax.config.update(n, v)
  cc.reset_cache()


def _devices():
  return jax.devices()[:1]


def _train(workdir, **kw):
  return loop.train_and_evaluate(config_lib.build(_cfg()), workdir, devices=_devices(),
                                 **kw)


def _position(workdir):
  """The next training batch of the newest checkpoint's data iterator."""
  cfg = config_lib.build(_cfg())
  it = pipeline.make_train_iterator(cfg.data, tokenizer.ByteTokenizer(),
                                    seed=cfg.data.shuffle_seed)
  setup = loop.build(cfg, devices=_devices())
  with checkpoint.Checkpointer(pathlib.Path(workdir) / 'checkpoints',
                               cfg.checkpoint) as ckpt:
    ckpt.restore(setup.abstract_state, it)
  return next(it)['inputs']


def _assert_bitwise(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('reference')
  out = _train(workdir)
  assert out['steps'] == STEPS and not out['preempted']
  return {'workdir': workdir, 'params': out['state'].params,
          'opt_state': out['state'].opt_state, 'position': _position(workdir)}


def _assert_same_as_reference(out, workdir, reference):
  assert out['steps'] == STEPS and not out['preempted']
  _assert_bitwise(out['state'].params, reference['params'])
  _assert_bitwise(out['state'].opt_state, reference['opt_state'])
  np.testing.assert_array_equal(_position(workdir), reference['position'])


# A training run in a subprocess. `slow` sleeps in each step's batch assembly so a
# signal can land at a chosen step; `hang_at` blocks Orbax's background commit of
# that step (in the seal, after every array is written, before the rename) so a
# kill -9 lands in the middle of an asynchronous save.
_SCRIPT = '''
import json, os, sys, time
import jax
jax.config.update('jax_num_cpu_devices', 8)
from lattice import sharding
from lattice.train import checkpoint, loop
workdir, cfg, opts = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
if opts.get('slow'):
  assemble = sharding.global_batch
  def slow(batch, mesh):
    time.sleep(opts['slow'])
    return assemble(batch, mesh)
  sharding.global_batch = slow
if opts.get('hang_at'):
  seal = checkpoint.write_manifest
  def hang(step_dir):
    if os.path.basename(str(step_dir)).startswith(f"{opts['hang_at']}."):
      open(os.path.join(workdir, 'SAVING'), 'w').close()
      time.sleep(600)
    return seal(step_dir)
  checkpoint.write_manifest = hang
out = loop.train_and_evaluate(cfg, workdir, devices=jax.devices()[:1])
print('RESULT', json.dumps({'steps': out['steps'], 'preempted': out['preempted']}),
      flush=True)
'''


def _spawn(workdir, cache, **opts):
  env = {**os.environ, 'PYTHONPATH': str(ROOT), 'JAX_COMPILATION_CACHE_DIR': str(cache),
         'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0',
         'JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES': '0'}
  return subprocess.Popen(
      [sys.executable, '-c', _SCRIPT, str(workdir), json.dumps(_cfg()), json.dumps(opts)],
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _wait_for(predicate, proc, what, timeout=180):
  deadline = time.time() + timeout
  while not predicate():
    assert proc.poll() is None, f'exited before {what}: {proc.communicate()}'
    assert time.time() < deadline, f'never reached {what}'
    time.sleep(0.05)


def _logged_steps(workdir):
  path = pathlib.Path(workdir) / 'metrics.jsonl'
  return path.read_text().count('\n') if path.exists() else 0


def test_sigterm_at_a_random_step_saves_exits_0_and_resumes_bitwise(
    tmp_path, reference, compile_cache):
  at = random.Random(8).randint(1, STEPS - 3)  # a step between two saves
  proc = _spawn(tmp_path, compile_cache, slow=0.3)
  _wait_for(lambda: _logged_steps(tmp_path) >= at, proc, f'step {at}')
  proc.send_signal(signal.SIGTERM)
  t0 = time.time()
  stdout, stderr = proc.communicate(timeout=60)
  assert proc.returncode == 0, stderr[-3000:]
  assert time.time() - t0 < 30, 'saving on SIGTERM should take seconds'
  saved = json.loads(stdout.split('RESULT ')[1])
  assert saved['preempted'] and at <= saved['steps'] < STEPS
  with checkpoint.Checkpointer(tmp_path / 'checkpoints', config_lib.CheckpointConfig()) as c:
    assert c.latest_step() == saved['steps']  # the interrupted step itself was saved
  out = _train(tmp_path)
  _assert_same_as_reference(out, tmp_path, reference)


def test_kill9_during_an_async_save_keeps_the_previous_checkpoint(
    tmp_path, reference, compile_cache):
  proc = _spawn(tmp_path, compile_cache, hang_at=6)
  _wait_for((tmp_path / 'SAVING').exists, proc, 'the save of step 6')
  proc.kill()  # SIGKILL: no handler runs, the background write dies mid-way
  proc.wait(timeout=30)
  folder = tmp_path / 'checkpoints'
  assert (folder / '6.orbax-checkpoint-tmp').is_dir()  # the half-done save
  assert not (folder / '6').exists()
  with checkpoint.Checkpointer(folder, config_lib.CheckpointConfig()) as c:
    assert c.all_steps() == [2, 4]  # the newest complete one is step 4
  out = _train(tmp_path)
  _assert_same_as_reference(out, tmp_path, reference)
  assert not list(folder.glob('*.orbax-checkpoint-tmp*'))  # cleaned up on restart


def _one_file(step_dir, under='state'):
  """The largest array-data file of a step (what a truncation would hit)."""
  files = [p for p in (step_dir / under).rglob('*') if p.is_file() and '/d/' in str(p)]
  return max(files, key=lambda p: p.stat().st_size)


def test_corrupt_newest_checkpoints_are_skipped_and_the_run_resumes(
    tmp_path, reference, caplog):
  shutil.copytree(reference['workdir'], tmp_path, dirs_exist_ok=True)
  folder = tmp_path / 'checkpoints'
  assert sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) == [4, 6, 8]
  victim = _one_file(folder / '8')
  victim.write_bytes(victim.read_bytes()[:-7])  # truncated
  victim = _one_file(folder / '6')
  data = bytearray(victim.read_bytes())
  data[len(data) // 2] ^= 0x40  # one flipped bit, same size
  victim.write_bytes(bytes(data))
  out = _train(tmp_path)
  warnings = [r.getMessage() for r in caplog.records if r.levelname == 'WARNING']
  assert any('step 8' in w and 'truncated' in w for w in warnings), warnings
  assert any('step 6' in w and 'sha256' in w for w in warnings), warnings
  assert sorted(p.name for p in (folder / 'corrupt').iterdir()) == ['6', '8']
  _assert_same_as_reference(out, tmp_path, reference)


def _grad_nan_on(batch_inputs):
  """A loss whose value stays finite but whose gradient is NaN on one given batch."""
  marker = jnp.asarray(batch_inputs[0, :8])

  def loss_fn(model, variables, batch, mutable):
    loss, aux = step_lib.lm_loss(model, variables, batch, mutable)
    hit = jnp.all(batch['inputs'][0, :8] == marker)
    w = jax.tree.leaves(variables['params'])[0]
    # d/dw sqrt(sum w - sum w) = inf - inf = NaN, while the value is 0.
    poison = jax.lax.cond(hit, lambda: jnp.sqrt(jnp.sum(w) - jnp.sum(w)), lambda: 0.0)
    return loss + poison, aux

  return loss_fn


def test_nan_gradient_stops_naming_step_and_metric_and_never_checkpoints_it(
    tmp_path, capsys):
  cfg = config_lib.build(_cfg())
  it = pipeline.make_train_iterator(cfg.data, tokenizer.ByteTokenizer(),
                                    seed=cfg.data.shuffle_seed)
  firsts = [next(it)['inputs'] for _ in range(STEPS)]
  assert len({f[0, :8].tobytes() for f in firsts}) == STEPS  # the marker is unique
  loss_fn = _grad_nan_on(firsts[2])  # step 3
  with pytest.raises(loop.NonFiniteError, match=r'non-finite grad_norm at step 3 '
                     r'\(loss=[0-9.]+, grad_norm=nan\)'):
    _train(tmp_path, loss_fn=loss_fn)
  folder = tmp_path / 'checkpoints'
  with checkpoint.Checkpointer(folder, config_lib.CheckpointConfig()) as c:
    assert c.all_steps() == [2]  # nothing at or after the poisoned step
  # The same run, set to skip such steps, resumes from step 2 and finishes; every
  # checkpoint it writes is finite.
  skip = config_lib.replace(cfg, **{'train.nonfinite': 'skip'})
  out = loop.train_and_evaluate(skip, tmp_path, loss_fn=loss_fn, devices=_devices())
  assert out['steps'] == STEPS
  assert 'skipped step: non-finite grad_norm at step 3' in capsys.readouterr().out
  setup = loop.build(skip, devices=_devices())
  with checkpoint.Checkpointer(folder, config_lib.CheckpointConfig()) as c:
    for step in c.all_steps():
      state = c.restore(setup.abstract_state, step=step)
      assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state))


# --- Checkpointer-level faults (no training) ---------------------------------------

def _state(value):
  return {'w': jnp.full((4, 32), float(value)), 'step': jnp.asarray(value, jnp.int32)}


def _ckpt_cfg(**kw):
  return dataclasses.replace(config_lib.CheckpointConfig(), every=1, keep=10, **kw)


def _data_iter(tmp_path):
  folder = tmp_path / 'corpus'
  folder.mkdir(exist_ok=True)
  for i in range(6):
    (folder / f'{i}.txt').write_text(f'document {i} ' * (4 + i))
  data_cfg = dataclasses.replace(config_lib.DataConfig(), source='text',
                                 paths=str(folder), val_fraction=0, seq_len=8,
                                 batch_size=2)
  return pipeline.make_train_iterator(data_cfg, tokenizer.ByteTokenizer(), seed=0,
                                      process_index=0, process_count=1)


_CORRUPTIONS = {
    # name: (how to damage step_dir, words the warning must contain)
    'truncated': (lambda d: _truncate(_one_file(d)), 'truncated'),
    'flipped_bit': (lambda d: _flip(_one_file(d)), 'sha256'),
    'deleted_file': (lambda d: _one_file(d).unlink(), 'missing'),
    'tampered_data_position': (
        lambda d: (d / 'data' / 'process_0-of-1.json').write_text('{"next_index": 0}'),
        'process_0-of-1.json'),
    'added_file': (lambda d: (d / 'state' / 'extra').write_text('x'), 'not there'),
    'no_manifest': (lambda d: (d / checkpoint.MANIFEST).unlink(), 'never sealed'),
    'garbled_manifest': (lambda d: (d / checkpoint.MANIFEST).write_text('{"fi'),
                         'unreadable'),
}


def _truncate(path):
  path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip(path):
  data = bytearray(path.read_bytes())
  data[-1] ^= 1
  path.write_bytes(bytes(data))


def test_every_kind_of_corruption_is_detected_named_and_skipped(tmp_path, caplog):
  it = _data_iter(tmp_path)
  folder = tmp_path / 'ckpt'
  positions = {}
  with checkpoint.Checkpointer(folder, _ckpt_cfg()) as c:
    for step in range(1, len(_CORRUPTIONS) + 2):
      next(it)
      c.save(step, _state(step), it)
      positions[step] = json.dumps(it.get_state(), sort_keys=True)
  for step, (damage, _) in enumerate(_CORRUPTIONS.values(), start=2):
    assert checkpoint.verify(folder / str(step)) is None
    damage(folder / str(step))
  c = checkpoint.Checkpointer(folder, _ckpt_cfg())
  for step, (name, (_, words)) in enumerate(_CORRUPTIONS.items(), start=2):
    with pytest.raises(checkpoint.CorruptCheckpointError, match=f'step {step} .*{words}'):
      c.restore(_state(0), step=step)  # an explicit step is never loaded if corrupt
  fresh = _data_iter(tmp_path)
  restored = c.resume(_state(0), fresh)
  assert int(restored['step']) == 1  # the one good checkpoint, after 7 bad ones
  np.testing.assert_array_equal(restored['w'], _state(1)['w'])
  assert json.dumps(fresh.get_state(), sort_keys=True) == positions[1]
  warnings = [r.getMessage() for r in caplog.records if r.levelname == 'WARNING']
  for step, (name, (_, words)) in enumerate(_CORRUPTIONS.items(), start=2):
    assert any(f'step {step} in {folder}' in w and words in w for w in warnings), (
        name, warnings)
  assert c.all_steps() == [1]  # the corrupt ones were moved aside, so new saves work
  assert sorted(int(p.name) for p in (folder / 'corrupt').iterdir()) == list(
      range(2, len(_CORRUPTIONS) + 2))
  assert c.save(2, _state(2), fresh)
  c.close()


def test_all_corrupt_means_a_fresh_start_not_garbage(tmp_path, caplog):
  with checkpoint.Checkpointer(tmp_path, _ckpt_cfg()) as c:
    c.save(1, _state(1))
  _flip(_one_file(tmp_path / '1'))
  with checkpoint.Checkpointer(tmp_path, _ckpt_cfg()) as c:
    assert c.resume(_state(0)) is None
    with pytest.raises(FileNotFoundError, match='no checkpoint to restore'):
      c.restore(_state(0))
  assert 'step 1' in caplog.text and 'corrupt' in caplog.text


def _enospc(*args, **kwargs):
  raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_disk_full_during_a_save_keeps_earlier_checkpoints(tmp_path, monkeypatch):
  it = _data_iter(tmp_path)
  folder = tmp_path / 'ckpt'
  c = checkpoint.Checkpointer(folder, _ckpt_cfg())
  assert c.save(1, _state(1), it) and c.save(2, _state(2), it)
  c.wait()
  good = {s: sorted(p.read_bytes() for p in (folder / str(s)).rglob('*') if p.is_file()
                    and p.name not in ('_CHECKPOINT_METADATA',)) for s in (1, 2)}

  # 1. The data-iterator file (written before `save` returns) hits a full disk.
  path_type = type(epath.Path(folder))
  write_text = path_type.write_text
  def full_for_json(self, *a, **kw):
    return _enospc() if self.name.startswith('process_') else write_text(self, *a, **kw)
  monkeypatch.setattr(path_type, 'write_text', full_for_json)
  with pytest.raises(checkpoint.CheckpointError,
                     match=r'writing step 3 .*No space left on device.*steps \[1, 2\]'):
    c.save(3, _state(3), it)
  monkeypatch.undo()
  c.close()

  # 2. The disk fills during the background part: the error surfaces at the next
  # save (or wait), naming the step that failed.
  monkeypatch.setattr(checkpoint, 'write_manifest', _enospc)
  c2 = checkpoint.Checkpointer(folder, _ckpt_cfg())
  assert c2.all_steps() == [1, 2]
  assert c2.save(4, _state(4), it)  # returns at once; the write fails later
  with pytest.raises(checkpoint.CheckpointError,
                     match=r'writing step 4 .*No space left on device.*steps \[1, 2\]'):
    c2.save(5, _state(5), it)
  monkeypatch.undo()
  c2.close()

  c = checkpoint.Checkpointer(folder, _ckpt_cfg())
  assert c.all_steps() == [1, 2]  # nothing half-written was committed
  for s in (1, 2):
    now = sorted(p.read_bytes() for p in (folder / str(s)).rglob('*') if p.is_file()
                 and p.name not in ('_CHECKPOINT_METADATA',))
    assert now == good[s]  # byte for byte what was saved before the disk filled
    assert checkpoint.verify(folder / str(s)) is None
  np.testing.assert_array_equal(c.restore(_state(0))['w'], _state(2)['w'])
  assert c.save(3, _state(3), it)  # space is back: saving works again
  c.close()


# --- Bad input: seeded fuzzing of the command line, in this process ----------------

SMOKE = '--config=experiments/baseline_lm.py:smoke'
# Size-like integers of the sections every run uses (technique sections such as
# model.ffn / model.linear are validated when their kind is chosen; seeds may be
# any integer jax accepts, except the data shuffle seed that numpy needs >= 0).
_SIZE_SECTIONS = ('model.d_model', 'model.n_layers', 'model.max_len', 'model.vocab_size',
                  'model.attention.', 'data.', 'train.', 'optimizer.', 'checkpoint.',
                  'mesh.')
_BAD_VALUES = {int: ['abc', '1.5', '', 'ten', '0x1g', '3 4'],
               float: ['fast', '', '1,5', 'e3x', '--'],
               bool: ['maybe', '2', 'yess', '']}


def _leaves(node, prefix=''):
  for key in node.keys():
    value, path = node[key], f'{prefix}{key}'
    if hasattr(value, 'keys'):
      yield from _leaves(value, path + '.')
    else:
      yield path, value


def _typo(rng, word):
  i = rng.randrange(len(word))
  return rng.choice([word[:i] + word[i + 1:], word[:i] + 'x' + word[i:],
                     word + rng.choice('sz_'), word[:i] + word[i:][::-1]])


def _fuzz_cases(rng, tmp):
  """(name, argv, env, text the one error line must hold) for seeded random input."""
  from experiments import baseline_lm
  leaves = dict(_leaves(baseline_lm.get_config('smoke')))
  work = f'--workdir={tmp / "work"}'
  cases = []
  typed = [(p, type(v)) for p, v in leaves.items() if type(v) in _BAD_VALUES]
  for path, kind in rng.sample(typed, 10):  # wrong types
    value = rng.choice(_BAD_VALUES[kind])
    cases.append((f'type {path}={value!r}', [SMOKE, f'--config.{path}={value}', work],
                  {}, f'--config.{path}: expected'))
  sizes = [p for p, v in leaves.items() if type(v) is int and p.startswith(_SIZE_SECTIONS)
           and p != 'train.seed']
  for path in rng.sample(sizes, 10):  # negative sizes
    value = -rng.choice([1, 3, 1000, 2**31])
    cases.append((f'negative {path}', [SMOKE, f'--config.{path}={value}', work], {},
                  path))
  for path in rng.sample(sorted(leaves), 6):  # unknown keys
    parts = path.split('.')
    j = rng.randrange(len(parts))
    parts[j] = _typo(rng, parts[j])
    bad = '.'.join(parts)
    if bad not in leaves and not any(p.startswith(bad + '.') for p in leaves):
      cases.append((f'unknown {bad}', [SMOKE, f'--config.{bad}=1', work], {},
                    'unknown config key'))
  combos = [  # incompatible combinations: (overrides, the field the error names)
      (['model.attention.n_heads=3'], 'model.attention.n_heads'),
      (['model.attention.n_heads=4', 'model.attention.n_kv_heads=3'],
       'model.attention.n_kv_heads'),
      (['data.batch_size=12'], 'data.batch_size'),
      (['mesh.tensor=3'], 'mesh'),
      (['mesh.fsdp=16'], 'mesh'),
      (['data.seq_len=1000'], 'data.seq_len'),
      (['model.vocab_size=100'], 'model.vocab_size'),
      (['optimizer.warmup_steps=50', 'train.steps=10'], 'optimizer.warmup_steps'),
      (['model.ffn.kind=moe', 'model.ffn.top_k=9'], 'model.ffn.top_k'),
      (['data.source=text'], 'data.paths'),
      (['model.dtype=float8'], 'model.dtype'),
      (['optimizer.schedule=linear'], 'optimizer.schedule'),
      (['data.source=parquet'], 'data.source'),
      (['data.val_fraction=1.0'], 'data.val_fraction'),
  ]
  for overrides, field in rng.sample(combos, 8):
    cases.append((f'combo {" ".join(overrides)}',
                  [SMOKE, *[f'--config.{o}' for o in overrides], work], {}, field))
  data = _bad_data(tmp)
  for name, (paths, source, want) in data.items():  # every bad data path
    cases.append((f'data {name}', [SMOKE, f'--config.data.source={source}',
                                   f'--config.data.paths={paths}', work], {}, want))
  cases += [  # multi-process flags and environment
      ('flag num_processes=0', [SMOKE, work, '--num_processes=0'], {}, '--num_processes'),
      ('flag process_id out of range', [SMOKE, work, '--num_processes=2',
                                        '--process_id=2',
                                        '--coordinator_address=127.0.0.1:1'], {},
       '--process_id'),
      ('flag coordinator without port', [SMOKE, work, '--coordinator_address=localhost',
                                         '--num_processes=2', '--process_id=0'], {},
       'host:port'),
      ('env JAX_NUM_PROCESSES=two', [SMOKE, work], {'JAX_NUM_PROCESSES': 'two'},
       '$JAX_NUM_PROCESSES'),
      ('env coordinator alone', [SMOKE, work],
       {'JAX_COORDINATOR_ADDRESS': '127.0.0.1:1'}, 'give all three'),
  ]
  return cases


def _bad_data(tmp):
  """name -> (data.paths, data.source, text the error must hold)."""
  (tmp / 'empty_dir').mkdir()
  (tmp / 'hidden_only').mkdir()
  (tmp / 'hidden_only' / '.notes.txt').write_text('hidden')
  (tmp / 'empty.txt').write_text('')
  (tmp / 'model.bin').write_bytes(bytes(range(256)) * 8)
  (tmp / 'bad.jsonl').write_text('{"text": "ok"}\n{"text": \n')
  (tmp / 'nofield.jsonl').write_text('{"body": "no text field"}\n')
  locked = tmp / 'locked.txt'
  unreadable = 'cannot read'
  if os.geteuid() == 0:  # root reads any mode; a read that fails is one that errors
    locked.symlink_to('/proc/self/mem')
    # Startup checks metadata first (lattice/data/index.py): /proc/self/mem stats as
    # 0 bytes, so it is refused as empty before any read is tried.
    unreadable = 'files are empty'
  else:
    locked.write_text('secret')
    locked.chmod(0)
  return {
      'missing': (tmp / 'nope.txt', 'text', 'does not exist'),
      'empty folder': (tmp / 'empty_dir', 'text', 'holds no data files'),
      'hidden files only': (tmp / 'hidden_only', 'text', 'holds no data files'),
      'empty file': (tmp / 'empty.txt', 'text', 'empty'),
      'binary': (tmp / 'model.bin', 'text', 'looks binary'),
      'unreadable': (locked, 'text', unreadable),
      'glob matching nothing': (tmp / '*.parquet', 'text', 'matches no files'),
      'malformed jsonl': (tmp / 'bad.jsonl', 'jsonl', 'malformed JSON'),
      'jsonl without the field': (tmp / 'nofield.jsonl', 'jsonl', 'data.field'),
      'empty paths': ('', 'jsonl', 'data.paths'),
  }


class _Hang(Exception):
  pass


def _run_main(argv, env):
  """lattice.main in this process: (exit code, stderr, stdout)."""
  import contextlib
  import io
  from absl import flags
  from lattice import main as main_lib
  flags.FLAGS.unparse_flags()
  for name in [n for n in flags.FLAGS if n.startswith('config.')]:
    delattr(flags.FLAGS, name)  # the previous case's --config.* override flags
  err, out = io.StringIO(), io.StringIO()
  saved_argv, saved_env = sys.argv, dict(os.environ)
  sys.argv = ['lattice', *argv]
  os.environ.update(env)

  def hang(*_):
    raise _Hang(f'no answer in 60 s: {argv}')

  previous = signal.signal(signal.SIGALRM, hang)
  signal.alarm(60)
  try:
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
      try:
        main_lib.cli(sys.argv)
        code = 0
      except SystemExit as e:
        code = e.code
  finally:
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)
    sys.argv = saved_argv
    os.environ.clear()
    os.environ.update(saved_env)
  return code, err.getvalue(), out.getvalue()


def test_fuzzed_bad_input_always_ends_in_one_clear_line(tmp_path, monkeypatch):
  monkeypatch.chdir(ROOT)
  for key in ('JAX_COORDINATOR_ADDRESS', 'JAX_NUM_PROCESSES', 'JAX_PROCESS_ID'):
    monkeypatch.delenv(key, raising=False)
  cases = _fuzz_cases(random.Random(2026), tmp_path)
  assert len(cases) >= 45
  problems = []
  for name, argv, env, want in cases:
    try:
      code, err, out = _run_main(argv, env)
    except Exception as e:  # pylint: disable=broad-except
      problems.append(f'{name}: raised {type(e).__name__}: {e}')
      continue
    lines = [l for l in err.splitlines() if l.strip()]
    if code != 2 or len(lines) != 1 or 'Traceback' in err + out:
      problems.append(f'{name}: exit {code}, stderr {err[-600:]!r}')
    elif not lines[0].startswith('lattice: error: ') or want not in lines[0]:
      problems.append(f'{name}: {lines[0]!r} does not name {want!r}')
  assert not list((tmp_path / 'work').glob('**/result.json'))
  assert not problems, '\n'.join(problems)


def test_distributed_setup_from_flags_environment_or_cluster():
  from lattice import distributed
  args = distributed.distributed_args
  assert args(None, None, None, None, environ={}) is None  # one process
  assert args(None, None, None, False, environ={'SLURM_NTASKS': '4'}) is None
  want = {'coordinator_address': '10.0.0.2:1234', 'num_processes': 4, 'process_id': 3}
  assert args('10.0.0.2:1234', 4, 3, None, environ={}) == want
  env = {'JAX_COORDINATOR_ADDRESS': '10.0.0.2:1234', 'JAX_NUM_PROCESSES': '4',
         'JAX_PROCESS_ID': '3'}
  assert args(None, None, None, None, environ=env) == want
  assert args(None, None, 1, None, environ=env)['process_id'] == 1  # flags win
  # Clusters JAX detects by itself: initialize() with no arguments.
  for env in ({'SLURM_NTASKS': '8'}, {'OMPI_COMM_WORLD_SIZE': '2'},
              {'TPU_WORKER_HOSTNAMES': 'w-0,w-1,w-2,w-3'}):
    assert args(None, None, None, None, environ=env) == {}
  assert args(None, None, None, None, environ={'SLURM_NTASKS': '1'}) is None
  assert args(None, None, None, True, environ={}) == {}  # --distributed: auto-detect
  with pytest.raises(config_lib.ConfigError, match='give all three'):
    args('10.0.0.2:1234', None, None, None, environ={})


@pytest.mark.parametrize('fault', ['disk_full', 'nan'])
def test_run_faults_end_the_command_in_one_line_exit_1(tmp_path, monkeypatch, fault):
  from lattice import main as main_lib
  monkeypatch.chdir(ROOT)
  error = (checkpoint.CheckpointError('checkpoint: writing step 9 to /ckpt failed: '
                                      'OSError: [Errno 28] No space left on device; '
                                      'the earlier checkpoints (steps [3, 6]) are intact')
           if fault == 'disk_full' else
           loop.NonFiniteError('non-finite grad_norm at step 5 (loss=2.0, grad_norm=nan)'))

  def failing_run(config, workdir):
    raise error

  monkeypatch.setattr(main_lib, 'run', failing_run)
  code, err, out = _run_main([SMOKE, f'--workdir={tmp_path}'], {})
  assert code == 1 and 'Traceback' not in err + out
  assert [l for l in err.splitlines() if l.strip()] == [f'lattice: error: {error}']


def test_a_preempted_run_exits_143_so_a_supervisor_reruns_it(tmp_path, monkeypatch):
  from lattice import main as main_lib
  from lattice.run import arms
  monkeypatch.chdir(ROOT)

  def preempted_run(config, workdir):
    raise arms.Preempted("arm 'baseline' seed 0 saved its checkpoint on SIGTERM")

  monkeypatch.setattr(main_lib, 'run', preempted_run)
  code, err, out = _run_main([SMOKE, f'--workdir={tmp_path}'], {})
  assert code == arms.PREEMPTED_EXIT == 143 and 'Traceback' not in err + out
  assert 'preempted' in out and 'rerun the same command to resume' in out


def test_checkpoints_from_before_sealing_still_resume(tmp_path, caplog):
  with checkpoint.Checkpointer(tmp_path, _ckpt_cfg()) as c:
    c.save(1, _state(1))
    c.save(2, _state(2))
  for step in (1, 2):  # as an older lattice wrote them: no manifest anywhere
    (tmp_path / str(step) / checkpoint.MANIFEST).unlink()
  with checkpoint.Checkpointer(tmp_path, _ckpt_cfg()) as c:
    assert int(c.resume(_state(0))['step']) == 2
    assert c.all_steps() == [1, 2]
    assert c.save(3, _state(3))
  assert 'step 2' in caplog.text and 'trusting' in caplog.text
  # Once a sealed step exists, a step without a seal has lost it: corrupt.
  (tmp_path / '3' / 'state' / '_sharding').write_text('{}')
  with checkpoint.Checkpointer(tmp_path, _ckpt_cfg()) as c:
    with pytest.raises(checkpoint.CorruptCheckpointError, match='step 3'):
      c.restore(_state(0), step=3)
    assert int(c.resume(_state(0))['step']) == 2  # 3 corrupt: back to the legacy 2

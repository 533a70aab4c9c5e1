r"""Injects the faults a long run meets and measures what each one costs.

  python scripts/fault_injection.py --trials 3 [--seed 0] [--out docs/fault_tolerance.md]

On a tiny model (the test suite's ~30k-parameter LM, 12 steps, a checkpoint every 3)
it runs N trials of each fault, each at a random step, then restarts the run and
checks that it finishes exactly like an uninterrupted run (params, optimizer state
and the next data batch, compared bitwise):

  sigterm     SIGTERM to a training process (preemption notice)
  kill9_save  kill -9 while an asynchronous checkpoint write is in flight
  kill9_random  kill -9 at a random moment of a run that saves every step
  truncate    the newest checkpoint loses the tail of its largest file
  tamper      one byte flipped in a random file of the newest checkpoint
  enospc      the disk fills during a checkpoint write (OSError ENOSPC)
  nan         the gradient turns NaN at one step (train.nonfinite=stop, then skip)

and prints a markdown table: fault, trials, steps lost (work redone beyond the
last complete checkpoint), whether the resumed run was exact, and the time to
recover (restart -> back at the step the fault hit; the compiled step comes from
a persistent XLA cache, as it would on a real restart with a cache directory).
SIGTERM and kill -9 hit real subprocesses; the other faults run in this process.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import json
import os
import pathlib
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STEPS, EVERY = 12, 3
CONFIG = {
    'model': {'d_model': 32, 'n_layers': 2, 'max_len': 64,
              'attention': {'n_heads': 4, 'n_kv_heads': 2}},
    'data': {'seq_len': 16, 'batch_size': 8, 'eval_batches': 1},
    'optimizer': {'lr': 3e-3, 'warmup_steps': 2},
    'train': {'steps': STEPS, 'log_every': 1, 'eval_every': 0, 'progress': False,
              'flops_peak': 1e9},
    'checkpoint': {'every': EVERY, 'keep': 3},
}

# A training process: `slow` seconds of sleep per step (so a signal lands at a
# chosen step); `hang_at` blocks the commit of that step's save (after the arrays
# are written, before Orbax renames the folder) so kill -9 lands mid-save.
_WORKER = r'''
import json, os, sys, time
sys.path.insert(0, sys.argv[3])
from lattice import sharding
from lattice.train import checkpoint, loop
workdir, opts = sys.argv[1], json.loads(sys.argv[2])
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
      time.sleep(3600)
    return seal(step_dir)
  checkpoint.write_manifest = hang
out = loop.train_and_evaluate(opts['config'], workdir)
print('RESULT', json.dumps({'steps': out['steps'], 'preempted': out['preempted']}),
      flush=True)
'''


def _env(cache: pathlib.Path) -> dict:
  return {**os.environ, 'JAX_COMPILATION_CACHE_DIR': str(cache),
          'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0',
          'JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES': '0', 'JAX_PLATFORMS': 'cpu'}


def _spawn(workdir, cache, **opts):
  opts.setdefault('config', CONFIG)
  return subprocess.Popen(
      [sys.executable, '-c', _WORKER, str(workdir), json.dumps(opts), str(ROOT)],
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(cache))


def _logged(workdir) -> int:
  path = pathlib.Path(workdir) / 'metrics.jsonl'
  return path.read_text().count('\n') if path.exists() else 0


def _wait(predicate, proc, timeout=300):
  deadline = time.time() + timeout
  while not predicate():
    if proc.poll() is not None:
      raise RuntimeError(f'worker exited early: {proc.communicate()[1][-2000:]}')
    if time.time() > deadline:
      proc.kill()
      raise TimeoutError('worker never reached the fault point')
    time.sleep(0.02)


class Harness:
  """In-process training with a warm compile cache, and the reference digest."""

  def __init__(self, root: pathlib.Path):
    import jax
    self.root, self.cache = root, root / 'xla_cache'
    jax.config.update('jax_compilation_cache_dir', str(self.cache))
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
    jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)
    from lattice import config as config_lib
    self.cfg = config_lib.build(CONFIG)
    self.reference = self.digest(self.train(root / 'reference'), root / 'reference')

  def train(self, workdir, **kw):
    from lattice.train import loop
    return loop.train_and_evaluate(self.cfg, workdir, **kw)

  def digest(self, out, workdir) -> str:
    """sha256 of the final params, optimizer state and the next data batch."""
    import jax
    import numpy as np
    from lattice.data import pipeline, tokenizer
    from lattice.train import checkpoint, loop
    h = hashlib.sha256()
    for leaf in jax.tree.leaves((out['state'].params, out['state'].opt_state)):
      h.update(np.asarray(leaf).tobytes())
    it = pipeline.make_train_iterator(self.cfg.data, tokenizer.ByteTokenizer(),
                                      seed=self.cfg.data.shuffle_seed)
    setup = loop.build(self.cfg)
    with checkpoint.Checkpointer(pathlib.Path(workdir) / 'checkpoints',
                                 self.cfg.checkpoint) as c:
      c.restore(setup.abstract_state, it)
    h.update(next(it)['inputs'].tobytes())
    return h.hexdigest()

  def recover(self, workdir, fault_step: int, **kw) -> tuple[float, bool, int]:
    """Restart: (seconds until one step past `fault_step`, exact at the end, step
    resumed from). Counts verification, restore and the redone steps; not the
    interpreter start, which a real restart adds (~2-5 s)."""
    from lattice.train import checkpoint
    t0 = time.perf_counter()
    with checkpoint.Checkpointer(pathlib.Path(workdir) / 'checkpoints',
                                 self.cfg.checkpoint) as c:
      # What a restart will resume from (corrupt steps are set aside here).
      resumed = c._verified_latest() or 0  # pylint: disable=protected-access
    back = min(fault_step + 1, STEPS)  # back where it was, and one step further
    if back > resumed:
      self.train(workdir, stop_after=back, **kw)
    seconds = time.perf_counter() - t0
    out = self.train(workdir, **kw)
    return seconds, self.digest(out, workdir) == self.reference, resumed

  def steps(self, workdir) -> list[int]:
    from lattice.train import checkpoint
    with checkpoint.Checkpointer(pathlib.Path(workdir) / 'checkpoints',
                                 self.cfg.checkpoint) as c:
      return c.all_steps()


def _largest(step_dir: pathlib.Path) -> pathlib.Path:
  files = [p for p in step_dir.rglob('*') if p.is_file() and '/d/' in str(p)]
  return max(files, key=lambda p: p.stat().st_size)


def fault_sigterm(h: Harness, rng, work):
  at = rng.randint(1, STEPS - 2)
  proc = _spawn(work, h.cache, slow=0.25)
  _wait(lambda: _logged(work) >= at, proc)
  proc.send_signal(signal.SIGTERM)
  t0 = time.perf_counter()
  out, err = proc.communicate(timeout=120)
  exit_s = time.perf_counter() - t0
  if proc.returncode != 0:
    raise RuntimeError(f'SIGTERM exit {proc.returncode}: {err[-1500:]}')
  reached = json.loads(out.split('RESULT ')[1])['steps']
  seconds, exact, resumed = h.recover(work, reached)
  return {'step': reached, 'lost': reached - resumed, 'exact': exact,
          'recover_s': seconds, 'ok': resumed == reached,
          'detail': f'saved step {reached}, exit 0 after {exit_s:.1f}s'}


def fault_kill9_save(h: Harness, rng, work):
  at = EVERY * rng.randint(2, STEPS // EVERY - 1)
  proc = _spawn(work, h.cache, hang_at=at)
  _wait((work / 'SAVING').exists, proc)
  time.sleep(rng.uniform(0, 0.3))  # training goes on while the save is in flight
  reached = max(at, _logged(work))
  proc.kill()
  proc.wait()
  half_done = (work / 'checkpoints' / f'{at}.orbax-checkpoint-tmp').exists()
  seconds, exact, resumed = h.recover(work, reached)
  return {'step': reached, 'lost': reached - resumed, 'exact': exact,
          'recover_s': seconds, 'ok': half_done and resumed == at - EVERY,
          'detail': f'step {at} left uncommitted; resumed from {resumed}'}


def fault_kill9_random(h: Harness, rng, work):
  """kill -9 at a random moment of a run that saves every step (a save is nearly
  always in flight, so the kill lands inside Orbax's array writes too)."""
  config = json.loads(json.dumps(CONFIG))
  config['checkpoint']['every'] = 1
  proc = _spawn(work, h.cache, slow=0.05, config=config)
  _wait(lambda: _logged(work) >= 1, proc)
  time.sleep(rng.uniform(0.0, 1.0))
  reached = _logged(work) + 1  # metrics lag one step behind training
  proc.kill()
  proc.wait()
  folder = work / 'checkpoints'
  in_flight = [p.name for p in folder.glob('*.orbax-checkpoint-tmp*')]
  if proc.returncode != -signal.SIGKILL or reached > STEPS:
    raise RuntimeError('the run finished before the kill; use a larger step count')
  seconds, exact, resumed = h.recover(work, reached)
  return {'step': reached, 'lost': max(reached - resumed, 0), 'exact': exact,
          'recover_s': seconds, 'ok': exact,
          'detail': (f'killed with {in_flight[0]} in flight' if in_flight else
                     'killed between saves') + f'; resumed from {resumed}'}


def _damaged_run(h: Harness, rng, work, damage):
  at = EVERY * rng.randint(2, STEPS // EVERY - 1)
  h.train(work, stop_after=at)
  damage(work / 'checkpoints' / str(at), rng)
  seconds, exact, resumed = h.recover(work, at)
  corrupt = (work / 'checkpoints' / 'corrupt' / str(at)).exists()
  return {'step': at, 'lost': at - resumed, 'exact': exact, 'recover_s': seconds,
          'ok': corrupt and resumed == at - EVERY,
          'detail': f'step {at} detected, moved to corrupt/; resumed from {resumed}'}


def _truncate(step_dir, rng):
  f = _largest(step_dir)
  f.write_bytes(f.read_bytes()[: rng.randrange(f.stat().st_size)])


def _tamper(step_dir, rng):
  files = sorted(p for p in step_dir.rglob('*') if p.is_file()
                 and p.name not in ('lattice_manifest.json', '_CHECKPOINT_METADATA',
                                    'commit_success.txt') and p.stat().st_size)
  f = rng.choice(files)
  data = bytearray(f.read_bytes())
  data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
  f.write_bytes(bytes(data))


def fault_truncate(h, rng, work):
  return _damaged_run(h, rng, work, _truncate)


def fault_tamper(h, rng, work):
  return _damaged_run(h, rng, work, _tamper)


def fault_enospc(h: Harness, rng, work):
  from lattice.train import checkpoint
  at = EVERY * rng.randint(2, STEPS // EVERY)
  seal = checkpoint.write_manifest

  def full(step_dir):
    if os.path.basename(str(step_dir)).startswith(f'{at}.'):
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return seal(step_dir)

  checkpoint.write_manifest = full
  try:
    h.train(work)
    raise RuntimeError('the full disk went unreported')
  except checkpoint.CheckpointError as e:
    message = str(e)
  finally:
    checkpoint.write_manifest = seal
  assert f'step {at}' in message and 'No space left' in message, message
  reached = min(at + EVERY, STEPS)  # the error surfaces at the next save or the end
  seconds, exact, resumed = h.recover(work, reached)
  return {'step': reached, 'lost': reached - resumed, 'exact': exact,
          'recover_s': seconds, 'ok': resumed == at - EVERY,
          'detail': f'CheckpointError names step {at}; resumed from {resumed}'}


def fault_nan(h: Harness, rng, work):
  import jax
  import jax.numpy as jnp
  import numpy as np
  from lattice import config as config_lib
  from lattice.data import pipeline, tokenizer
  from lattice.train import checkpoint, loop, step as step_lib
  at = rng.randint(2, STEPS - 1)
  it = pipeline.make_train_iterator(h.cfg.data, tokenizer.ByteTokenizer(),
                                    seed=h.cfg.data.shuffle_seed)
  marker = jnp.asarray([next(it)['inputs'] for _ in range(at)][-1][0, :8])

  def loss_fn(model, variables, batch, mutable):
    loss, aux = step_lib.lm_loss(model, variables, batch, mutable)
    w = jax.tree.leaves(variables['params'])[0]
    hit = jnp.all(batch['inputs'][0, :8] == marker)
    return loss + jax.lax.cond(hit, lambda: jnp.sqrt(jnp.sum(w) - jnp.sum(w)),
                               lambda: 0.0), aux

  try:
    h.train(work, loss_fn=loss_fn)
    raise RuntimeError('the NaN went unreported')
  except loop.NonFiniteError as e:
    assert f'grad_norm at step {at}' in str(e), e
  saved = h.steps(work)
  t0 = time.perf_counter()
  skip = config_lib.replace(h.cfg, **{'train.nonfinite': 'skip'})
  loop.train_and_evaluate(skip, work, loss_fn=loss_fn, stop_after=at)
  seconds = time.perf_counter() - t0
  out = loop.train_and_evaluate(skip, work, loss_fn=loss_fn)
  setup = loop.build(skip)
  finite = True
  with checkpoint.Checkpointer(work / 'checkpoints', h.cfg.checkpoint) as c:
    for s in c.all_steps():
      state = c.restore(setup.abstract_state, step=s)
      finite &= all(bool(np.isfinite(np.asarray(x)).all()) for x in jax.tree.leaves(state))
  last = max(saved) if saved else 0
  return {'step': at, 'lost': at - last, 'exact': None,
          'recover_s': seconds, 'ok': all(s < at for s in saved) and finite
          and out['steps'] == STEPS,
          'detail': f'stopped naming step {at} + grad_norm; newest checkpoint {last}; '
                    'skip rerun: all checkpoints finite'}


FAULTS = {'sigterm': fault_sigterm, 'kill9_save': fault_kill9_save,
          'kill9_random': fault_kill9_random,
          'truncate': fault_truncate, 'tamper': fault_tamper, 'enospc': fault_enospc,
          'nan': fault_nan}

_WHAT = {
    'sigterm': 'SIGTERM at a random step (subprocess)',
    'kill9_save': 'kill -9 during an async checkpoint write (subprocess)',
    'kill9_random': 'kill -9 at a random moment, saving every step (subprocess)',
    'truncate': 'newest checkpoint truncated',
    'tamper': 'one bit flipped in a random file of the newest checkpoint',
    'enospc': 'ENOSPC during a checkpoint write',
    'nan': 'NaN gradient at a random step (stop, then rerun with skip)',
}


def table(rows: dict[str, list[dict]]) -> str:
  lines = ['| fault | trials | fault at step | steps redone | resumed exactly (bitwise) '
           '| checks passed | time to recover (s) | what happened (last trial) |',
           '|---|---|---|---|---|---|---|---|']
  for name, trials in rows.items():
    exact = [t['exact'] for t in trials]
    exact_s = ('n/a (a skipped step changes the run)' if all(e is None for e in exact)
               else f'{sum(bool(e) for e in exact)}/{len(exact)}')
    ok = [t['ok'] for t in trials]
    rec = [t['recover_s'] for t in trials]
    lines.append(
        f'| {_WHAT[name]} | {len(trials)} | {", ".join(str(t["step"]) for t in trials)} '
        f'| {", ".join(str(t["lost"]) for t in trials)} | {exact_s} '
        f'| {sum(ok)}/{len(ok)} | {min(rec):.1f}-{max(rec):.1f} '
        f'| {trials[-1]["detail"]} |')
  return '\n'.join(lines)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--trials', type=int, default=3)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--faults', default=','.join(FAULTS))
  parser.add_argument('--json', help='also write the per-trial records here')
  args = parser.parse_args(argv)
  from absl import logging
  logging.set_verbosity(logging.FATAL)  # the warnings and errors are the point here
  rng = random.Random(args.seed)
  root = pathlib.Path(tempfile.mkdtemp(prefix='lattice_faults_'))
  try:
    t0 = time.perf_counter()
    h = Harness(root)
    print(f'reference run: {time.perf_counter() - t0:.1f}s', flush=True)
    rows: dict[str, list[dict]] = {}
    for name in args.faults.split(','):
      rows[name] = []
      for trial in range(args.trials):
        work = root / f'{name}_{trial}'
        work.mkdir()
        record = FAULTS[name](h, rng, work)
        rows[name].append(record)
        print(f'{name} #{trial}: {json.dumps(record)}', flush=True)
    print()
    print(table(rows))
    if args.json:
      pathlib.Path(args.json).write_text(json.dumps(rows, indent=1))
  finally:
    shutil.rmtree(root, ignore_errors=True)


if __name__ == '__main__':
  main()

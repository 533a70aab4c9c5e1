"""Evaluations of a trained model's heads: teacher-forced draft acceptance
(lattice/eval/draft_acceptance.py), induction curves (lattice/eval/induction.py) and
sampled pass@k (lattice/eval/code_samples.py)."""

import json
import math

import jax
import numpy as np
import pytest

from lattice import config as config_lib
from lattice import model as model_lib
from lattice.eval import code_samples, draft_acceptance
from lattice.eval import induction as induction_eval


def _cfg(**mtp):
  return config_lib.build({'model': dict(d_model=16, n_layers=2, max_len=48, vocab_size=384,
                                         attention=dict(n_heads=2), mtp=mtp),
                           'data': dict(seq_len=16)})


def _variables(cfg, seed=0):
  model = model_lib.make_model(cfg.model, False)
  return model.init(jax.random.key(seed), model_lib.init_batch(cfg))


def _batch(seed=0):
  rng = np.random.default_rng(seed)
  ids = rng.integers(0, 256, (2, 17)).astype(np.int32)
  weights = np.ones((2, 16), np.float32)
  weights[1, 12:] = 0  # a padded tail is never scored
  return {'inputs': ids[:, :-1], 'targets': ids[:, 1:], 'weights': weights}


@pytest.mark.parametrize('mtp', [dict(kind='sequential', depth=1),
                                 dict(kind='parallel', n=2)])
def test_acceptance_matches_a_direct_count(mtp):
  cfg = _cfg(**mtp)
  variables, batch = _variables(cfg), _batch()
  out = draft_acceptance.teacher_forced(cfg.model, variables, [batch])
  o = model_lib.make_model(cfg.model, False).apply(variables, batch, method='outputs')
  main, draft = np.argmax(o['logits'], -1), np.argmax(o['mtp_logits'][0], -1)
  accepted = correct = n = 0
  choices = []
  for b in range(2):
    for i in range(15):  # token i + 2 must exist and be weighted
      if batch['weights'][b, i + 1] > 0:
        n += 1
        accepted += draft[b, i] == main[b, i + 1]
        correct += draft[b, i] == batch['targets'][b, i + 1]
        choices.append(main[b, i + 1])
  assert out['positions'] == n == 15 + 11
  assert out['acceptance'] == pytest.approx(accepted / n)
  assert out['draft_accuracy'] == pytest.approx(correct / n)
  assert out['const_acceptance'] == pytest.approx(np.bincount(choices).max() / n)


def test_acceptance_needs_a_draft_head():
  cfg = _cfg(kind='none')
  with pytest.raises(config_lib.ConfigError, match='model.mtp.kind'):
    draft_acceptance.teacher_forced(cfg.model, _variables(cfg), [_batch()])


def test_induction_curve_summaries():
  chance = induction_eval.CHANCE
  assert induction_eval.area([100, 200], [chance, chance], 200) == pytest.approx(chance)
  # (0, 0) -> (100, 1) -> (200, 1): a triangle of 50 plus a rectangle of 100.
  assert induction_eval.area([100, 200], [1.0, 1.0], 200, start=0.0) == pytest.approx(0.75)
  assert induction_eval.area([100], [1.0], 200, start=0.0) == pytest.approx(0.75)
  assert induction_eval.first_step_at([50, 100, 150], [0.1, 0.6, 0.9], 0.5) == 100
  assert math.isinf(induction_eval.first_step_at([50], [0.1], 0.5))
  with pytest.raises(ValueError):
    induction_eval.area([200, 100], [0.1, 0.2], 200)


def test_induction_accuracy_of_a_random_model_is_a_fraction():
  cfg = _cfg(kind='none')
  acc = induction_eval.accuracy(
      config_lib.replace(cfg, **{'data.seq_len': 40}), _variables(cfg), n_stories=4)
  assert 0.0 <= acc <= 1.0


def test_an_induction_scorer_compiles_the_model_once():
  """curve() scores every checkpoint with one scorer: later calls (new arrays of
  the same shapes, as a restored checkpoint gives) lower nothing new (lowerings are
  counted, not backend compiles, which the tests' persistent cache may skip)."""
  cfg = config_lib.replace(_cfg(kind='none'), **{'data.seq_len': 40})
  variables = _variables(cfg)
  score = induction_eval.scorer(cfg, n_stories=4)
  compiles = []

  def listener(event, duration_secs, **kwargs):
    del duration_secs, kwargs
    if event == '/jax/core/compile/jaxpr_to_mlir_module_duration':  # a lowering
      compiles.append(event)
  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    first = score(variables)
    after_first = len(compiles)
    again = [score(jax.tree.map(np.array, variables)) for _ in range(3)]
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)
  assert after_first >= 1 and len(compiles) == after_first, compiles
  assert again == [first] * 3
  assert first == induction_eval.accuracy(cfg, variables, n_stories=4)


def test_an_induction_curve_lowers_the_model_once_for_all_checkpoints(monkeypatch):
  """curve() over 3 checkpoints lowers no more than curve() over 1 (a fresh jax.jit
  per checkpoint lowered the model once per checkpoint: 3 against 1)."""
  import types  # pylint: disable=g-import-not-at-top
  cfg = config_lib.replace(_cfg(kind='none'), **{'data.seq_len': 40})
  variables = {s: _variables(cfg, seed=s) for s in (1, 2, 3)}
  kept = []

  class Checkpoints:  # the kept steps of a run, without Orbax
    def __init__(self, *args):
      del args
    def all_steps(self):
      return list(kept)
    def restore(self, state, step):
      del state
      return types.SimpleNamespace(variables=variables[step])
    def close(self):
      pass
  monkeypatch.setattr(induction_eval.checkpoint, 'Checkpointer', Checkpoints)
  lowerings = []

  def listener(event, duration_secs, **kwargs):
    del duration_secs, kwargs
    if event == '/jax/core/compile/jaxpr_to_mlir_module_duration':
      lowerings.append(event)

  def lowered_by_curve(steps):
    kept[:] = steps
    before = len(lowerings)
    out = induction_eval.curve(cfg, None, '/nonexistent', n_stories=4)
    return len(lowerings) - before, out
  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    lowered_by_curve([1])  # first-time compiles of anything else
    one, _ = lowered_by_curve([1])
    three, (steps, values) = lowered_by_curve([1, 2, 3])
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)
  assert three == one, (one, three)
  assert steps == [1, 2, 3]
  assert values == [induction_eval.accuracy(cfg, variables[s], n_stories=4) for s in steps]


def test_truncate_cuts_at_the_next_top_level_statement():
  assert code_samples.truncate('    return 1\n\ndef g():\n  pass') == '    return 1\n'
  assert code_samples.truncate('    return 1\n') == '    return 1\n'


def test_pass_at_k_samples_runs_and_scores(tmp_path):
  # The prompt ends inside a comment and the model writes one token, so whatever it
  # writes the program parses: 'ok' passes every sample and 'bad' none.
  path = tmp_path / 'he.jsonl'
  rows = [dict(task_id='ok', prompt='x = 1  # ', entry_point='print',
               test='def check(g):\n    pass\n'),
          dict(task_id='bad', prompt='x = 1  # ', entry_point='print',
               test='def check(g):\n    assert False\n')]
  path.write_text(''.join(json.dumps(r) + '\n' for r in rows))
  cfg = _cfg(kind='none')
  out = code_samples.pass_at_k(cfg, _variables(cfg), str(path), n=2, ks=(1, 2),
                               max_new_tokens=1)
  assert out == {'pass@1': 0.5, 'pass@2': 0.5, 'code_problems': 2.0}
  with pytest.raises(config_lib.ConfigError, match='model.max_len'):
    code_samples.pass_at_k(cfg, _variables(cfg), str(path), n=1, max_new_tokens=48)

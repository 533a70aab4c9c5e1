"""Generators, the OpenAI-compatible server and client, and the MoA family.

The MoA tests use deterministic fake generators whose outcomes are computed by
hand; the server and `OpenAIClient` are tested in tests/serve_test.py.
"""


import jax
import numpy as np
import pytest

from lattice import config as config_lib
from lattice.agents import generator, moa
from lattice.data.tasks import addition as arith_task
from lattice.train import loop

# --- fakes ---------------------------------------------------------------------------


class Table:
  """Answers by lookup: prompt -> list of answers, consumed in order per prompt."""

  def __init__(self, table, default='?'):
    self.table = {k: list(v) if isinstance(v, list) else [v] for k, v in table.items()}
    self.default = default
    self.seen = []

  def generate(self, prompts, max_tokens, temperature, constraint=None):
    self.seen.append(list(prompts))
    out = []
    for p in prompts:
      options = self.table.get(p)
      out.append(options.pop(0) if options and len(options) > 1
                 else (options[0] if options else self.default))
    return out


def fmt(question, answers):
  return question + '|' + '|'.join(answers)


# --- MoA plumbing ----------------------------------------------------------------------


def test_majority_and_diverse_select():
  assert moa.majority(['b', 'a', 'a', 'b']) == 'b'  # tie: first seen
  assert moa.majority([' 7', '7 ', '8']) == '7'
  assert moa.ngram_distance('1234', '1234') == 0.0
  # '1234' {12,23,34} vs '1299' {12,29,99}: 1 shared of 5 -> 0.8.
  assert moa.ngram_distance('1234', '1299') == pytest.approx(0.8)
  # Start from the majority '1234'; '5678' shares nothing (distance 1), '1235' is 0.5.
  assert moa.diverse_select(['1235', '1234', '1234', '5678'], 2) == ['1234', '5678']
  assert moa.diverse_select(['1235', '1234', '1234', '5678'], 5) == [
      '1234', '5678', '1235']


def test_blank_answers_are_abstentions():
  # Issue 19: majority(['', ' ', '42']) returned '' and the aggregator prompt listed
  # blank answers as numbered empty lines.
  assert moa.majority(['', ' ', '42']) == '42'
  assert moa.majority(['', ' \n']) == ''
  assert moa.diverse_select(['', '12', ' '], 3) == ['12']
  props = [Table({'q': ''}), Table({'q': '42'}), Table({'q': '  '})]
  agg = Table({'q|42': 'FINAL'})
  tr = moa.moa(['q'], [props], agg, fmt=fmt, max_tokens=4)
  assert agg.seen == [['q|42']] and tr.answers == ['FINAL']
  assert tr.layers == [[['', '42', '  ']]] and tr.abstained == 2
  assert moa.numbered_format('q', moa.voiced(['', '42'])).count('1. 42') == 1
  tr = moa.majority_vote(['q'], props, max_tokens=4)
  assert tr.answers == ['42'] and tr.abstained == 2


def test_majority_vote_and_single():
  a, b, c = Table({'q': '1'}), Table({'q': '2'}), Table({'q': '2'})
  tr = moa.majority_vote(['q'], [a, b, c], max_tokens=4)
  assert tr.answers == ['2'] and tr.calls == 3
  assert moa.single(['q', 'r'], a, max_tokens=4).answers == ['1', '?']


def test_moa_layers_and_batching():
  # Two proposers, the second used twice: it is called once with each prompt
  # repeated twice consecutively.
  p1 = Table({'q': 'a', 'q|a|b|c': 'x'})
  p2 = Table({'q': ['b', 'c'], 'q|a|b|c': ['y', 'z']})
  agg = Table({'q|x|y|z': 'FINAL', 'q|a|b|c': 'ONE'})
  tr = moa.moa(['q'], [[p1, p2, p2], [p1, p2, p2]], agg, fmt=fmt, max_tokens=4)
  assert p2.seen[0] == ['q', 'q']
  assert tr.layers == [[['a', 'b', 'c']], [['x', 'y', 'z']]]
  assert tr.answers == ['FINAL'] and tr.calls == 3 + 3 + 1
  one = moa.moa(['q'], [[Table({'q': 'a'}), Table({'q': 'b'}), Table({'q': 'c'})]],
                agg, fmt=fmt, max_tokens=4)
  assert one.answers == ['ONE']


def test_self_moa_and_seq():
  prop = Table({'q': ['s1', 's2', 's3', 's4', 's5']})
  agg = Table({'q|s1|s2|s3|s4|s5': 'all'})
  tr = moa.self_moa(['q'], prop, agg, n=5, fmt=fmt, max_tokens=4)
  assert tr.answers == ['all'] and tr.calls == 6 and prop.seen == [['q'] * 5]
  # window 3 over 5 samples: [s1 s2 s3] -> A; [A s4 s5] -> B.
  prop = Table({'q': ['s1', 's2', 's3', 's4', 's5']})
  agg = Table({'q|s1|s2|s3': 'A', 'q|A|s4|s5': 'B'})
  tr = moa.self_moa_seq(['q'], prop, agg, n=5, window=3, fmt=fmt, max_tokens=4)
  assert tr.answers == ['B'] and tr.calls == 5 + 2 and len(tr.layers) == 3
  # window 2 over 4 samples: [s1 s2] -> A; [A s3] -> B; [B s4] -> C.
  prop = Table({'q': ['s1', 's2', 's3', 's4']})
  agg = Table({'q|s1|s2': 'A', 'q|A|s3': 'B', 'q|B|s4': 'C'})
  tr = moa.self_moa_seq(['q'], prop, agg, n=4, window=2, fmt=fmt, max_tokens=4)
  assert tr.answers == ['C'] and tr.calls == 4 + 3
  with pytest.raises(ValueError, match='window'):
    moa.self_moa_seq(['q'], prop, agg, n=4, window=1, fmt=fmt, max_tokens=4)


def test_rmoa_residual_and_early_stop():
  # Question q: proposers say 1111, 1111, 2222 -> carry [1111, 2222] (k=2).
  # Layer 1: refiners say 1111, 3333 -> selected [1111, 3333]; residual [3333];
  #   carry = diverse([3333, 1111, 2222]) = [3333, 1111] (majority tie -> first).
  # Layer 2: refiners say 3333, 1111 -> residual empty -> q stops after 3 layers.
  # Question r: proposers all say 5555 -> carry [5555]; layer 1 says 5555 -> stop.
  props = [Table({'q': '1111', 'r': '5555'}), Table({'q': '1111', 'r': '5555'}),
           Table({'q': '2222', 'r': '5555'})]
  ref = Table({'q|1111|2222': ['1111', '3333'], 'q|3333|1111': ['3333', '1111'],
               'r|5555': ['5555', '5555']})
  agg = Table({'q|3333|1111': 'Q', 'r|5555': 'R'})
  tr = moa.rmoa(['q', 'r'], props, [ref, ref], agg, k=2, max_layers=5, fmt=fmt,
                max_tokens=4)
  assert tr.answers == ['Q', 'R']
  assert tr.layers_used == [3, 2]
  assert tr.layers[2] == [['3333', '1111'], None]
  assert tr.calls == 3 * 2 + 2 * 2 + 2 * 1 + 2


def test_attention_moa_critique_refine_and_stop():
  cf = lambda q, own, others: f'C:{q}:{own}:{",".join(others)}'
  rf = lambda q, own, others, crit: f'R:{q}:{own}:{crit}'
  # Layer 0: agents say 1 and 2. Layer 1: agent 0 critiques 'ok', refines to 2;
  # agent 1 critiques 'bad', refines to '' -> keeps 2 (residual). Answers changed
  # (1,2 -> 2,2) so layer 2 runs: both refine to 2 -> unchanged -> stop.
  a0 = Table({'q': '1', 'C:q:1:2': 'ok', 'R:q:1:ok': '2', 'C:q:2:2': 'same',
              'R:q:2:same': '2'})
  a1 = Table({'q': '2', 'C:q:2:1': 'bad', 'R:q:2:bad': '', 'C:q:2:2': 'same',
              'R:q:2:same': '2'})
  tr = moa.attention_moa(['q'], [a0, a1], max_layers=6, critique_fmt=cf,
                         refine_fmt=rf, max_tokens=4)
  assert tr.layers == [[['1', '2']], [['2', '2']], [['2', '2']]]
  assert tr.layers_used == [3] and tr.answers == ['2']
  assert tr.calls == 2 + 2 * 2 + 2 * 2
  agg = Table({'q|2|2': 'AGG'})
  tr = moa.attention_moa(['q'], [a0, a1], max_layers=1, aggregator=agg, fmt=fmt,
                         critique_fmt=cf, refine_fmt=rf, max_tokens=4,
                         proposers=[Table({'q': '2'}), Table({'q': '2'})])
  assert tr.answers == ['AGG'] and tr.layers_used == [1]


# --- LatticeGenerator --------------------------------------------------------------------


@pytest.fixture(scope='module')
def lattice_gen(tmp_path_factory):
  cfg = config_lib.build({
      'model': {'d_model': 32, 'n_layers': 1, 'max_len': 32,
                'attention': {'n_heads': 2}},
      'data': {'source': 'moa_arith', 'seq_len': 16, 'batch_size': 8,
               'eval_batches': 1},
      'optimizer': {'lr': 3e-3, 'warmup_steps': 1},
      'train': {'steps': 2, 'log_every': 1, 'eval_every': 0, 'progress': False,
                'flops_peak': 1e9},
      'checkpoint': {'every': 2}})
  workdir = tmp_path_factory.mktemp('gen')
  out = loop.train_and_evaluate(cfg, workdir, devices=jax.devices()[:1])
  gen = generator.LatticeGenerator(jax.device_get(out['state'].variables),
                                   out['setup'].cfg.model)
  return gen, workdir


def test_lattice_generator_greedy_is_deterministic(lattice_gen):
  gen, workdir = lattice_gen
  prompts = ['12+34=', '1+2=', '56+78=']  # two lengths, grouped
  a = gen.generate(prompts, 6, 0.0)
  assert a == gen.generate(prompts, 6, 0.0)
  assert len(a) == 3 and all(len(t.encode()) <= 6 for t in a)
  # Grouping and row padding do not change a prompt's greedy completion.
  assert gen.generate(['56+78='], 6, 0.0) == [a[2]]
  chunked = generator.LatticeGenerator(gen.variables, gen.model_cfg, batch_size=2)
  assert chunked.generate(prompts * 2, 6, 0.0) == a * 2
  # The same params restored from the checkpoint (config from config.json).
  restored = generator.LatticeGenerator.from_workdir(workdir)
  assert restored.generate(prompts, 6, 0.0) == a
  with pytest.raises(ValueError, match='max_len'):
    gen.generate(['x' * 30], 6, 0.0)


def test_arith_task_is_exact():
  assert arith_task.answer_of('12+34=') == '046'
  assert arith_task.aggregate_prompt('12+34=', ['46', '0461', '047']) == (
      '12+34=|46?|046|047|---|---|---|>')
  assert arith_task.normalize('\ufffd|1') == '??1'
  with pytest.raises(ValueError, match='at most'):
    arith_task.aggregate_prompt('12+34=', ['1'] * 7)
  assert arith_task.is_correct('99+99=', '198 ') and not arith_task.is_correct(
      '99+99=', '197')
  train = set(arith_task.questions(arith_task.N_TRAIN, 0))
  assert not train & set(arith_task.eval_questions(50))
  rng = np.random.default_rng(0)
  assert arith_task.corrupt('0123', 0.0, rng) == '0123'
  assert all(a != b for a, b in zip(arith_task.corrupt('0123', 1.0, rng), '0123'))

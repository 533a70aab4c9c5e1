"""Aggregator data from real proposer samples (lattice/agents/aggregate_data.py),
paired bootstrap checks over items (lattice/run/bootstrap.py) and the open-model
dimension table (lattice/agents/open_models.py)."""

import json

import pytest

from lattice import config as config_lib
from lattice.agents import aggregate_data, open_models
from lattice.data.tasks import addition
from lattice.run import bootstrap


class _Fixed:
  """A generator that always writes `text`; counts its calls."""

  def __init__(self, text):
    self.text, self.calls = text, 0

  def generate(self, prompts, max_tokens, temperature, constraint=None):
    self.calls += 1
    return [self.text] * len(prompts)


def test_sampled_docs_use_only_the_proposers_answers(tmp_path):
  qs = addition.train_questions(20)
  gens = [_Fixed('111'), _Fixed('222')]
  docs = aggregate_data.sampled_docs(
      qs, gens, answer_of=addition.answer_of, fmt=addition.aggregate_prompt, samples=2,
      max_candidates=3, temperature=0.5, max_tokens=4, seed=1)
  assert [g.calls for g in gens] == [2, 2] and len(docs) == 20
  for q, doc in zip(qs, docs):
    prompt = doc[:-addition.ANSWER_WIDTH]
    assert doc.endswith(addition.answer_of(q)) and prompt.startswith(q)
    shown = [c for c in ('111', '222') if c in prompt]
    assert shown and prompt.count('111') + prompt.count('222') <= 3
  path = aggregate_data.write_jsonl(docs, tmp_path / 'agg' / 'train.jsonl')
  assert [json.loads(l)['text'] for l in open(path)] == docs


def test_sampled_docs_min_candidates_zero_keeps_plain_questions():
  qs = addition.train_questions(200)
  docs = aggregate_data.sampled_docs(
      qs, [_Fixed('111')], answer_of=addition.answer_of, fmt=addition.aggregate_prompt,
      samples=3, max_candidates=3, temperature=0.5, max_tokens=4, min_candidates=0)
  shown = [d[:-addition.ANSWER_WIDTH].count('111') for d in docs]
  assert set(shown) == {0, 1, 2, 3}  # 0..3 candidates, each count drawn
  with pytest.raises(ValueError, match='min_candidates'):
    aggregate_data.sampled_docs(qs, [_Fixed('1')], answer_of=addition.answer_of,
                                fmt=addition.aggregate_prompt, samples=1,
                                max_candidates=2, temperature=0.5, max_tokens=4,
                                min_candidates=3)


def test_train_questions_are_the_training_sources():
  assert set(addition.train_questions(50)) <= {
      d[:-addition.ANSWER_WIDTH] for d in addition._docs('moa_arith', 'train')}
  assert not set(addition.train_questions(6000)) & set(addition.eval_questions(100))


def test_paired_bootstrap_check():
  a = [1.0] * 80 + [0.0] * 20
  b = [1.0] * 50 + [0.0] * 50
  assert bootstrap.better('a > b', 'a', a, 'b', b).passed
  assert not bootstrap.better('b > a', 'b', b, 'a', a).passed
  assert not bootstrap.better('a > a', 'a', a, 'a', a).passed  # no spread: diff 0
  ci = bootstrap.paired(a, b)
  assert ci['lo'] < 0.3 < ci['hi'] and ci['diff'] == pytest.approx(0.3)
  with pytest.raises(ValueError):
    bootstrap.paired([1.0], [0.0, 1.0])


@pytest.mark.parametrize('name', sorted(open_models.OPEN_MODELS))
def test_open_model_sections_build(name):
  cfg = config_lib.build({'model': open_models.model_section(name, max_len=64),
                          'data': {'seq_len': 32}})
  m = open_models.OPEN_MODELS[name]
  assert cfg.model.attention.n_kv_heads == m.n_kv_heads and cfg.model.d_ff == m.d_ff
  with pytest.raises(config_lib.ConfigError, match='open model'):
    open_models.model_section('gpt-5', 64)

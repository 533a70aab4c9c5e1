"""Tool-call task and strict evaluator: exact calls pass, each kind of wrong call is named."""

import dataclasses
import json

import flax.linen as nn
import jax
import numpy as np
import pytest

from lattice import config as config_lib
from lattice.agents import toolcall
from lattice.data import pipeline
from lattice.data import sources
from lattice.data import tokenizer as tok_lib
from lattice.data.tasks import toolcalls
from lattice.decode import constraints, sampling
from lattice.nn import transformer

from conftest import tiny_config

EXAMPLES = toolcalls.generate(600, 0, 'train')


def test_examples_are_deterministic_cover_all_tools_and_fit_the_prompt():
  assert toolcalls.generate(600, 0, 'train') == EXAMPLES
  assert toolcalls.generate(50, 0, 'test') != EXAMPLES[:50]
  assert {e.call['name'] for e in EXAMPLES} == set(toolcalls.TOOLS)
  prompts = {len(toolcalls.prompt_of(e.request)) for e in EXAMPLES}
  assert prompts == {toolcalls.REQUEST_WIDTH + 1}
  math_only = toolcalls.generate(100, 3, 'train', clusters=('math',))
  assert {e.cluster for e in math_only} == {'math'}
  with pytest.raises(ValueError, match='unknown clusters'):
    toolcalls.generate(1, 0, 'train', clusters=('cooking',))


def test_correct_calls_pass_and_match_the_call_automaton():
  dfa = constraints.compile_schema(toolcalls.call_schema())
  for e in EXAMPLES:
    text = toolcalls.render_call(e.call)
    assert dfa.matches(text), text
    assert toolcall.evaluate_call(text, e.call).ok, text
  # JSON equality of values, whitespace and key order are not graded.
  call = {'name': 'add', 'arguments': {'a': 12, 'b': 2.5}}
  assert toolcall.evaluate_call('{ "arguments": {"b": 2.5, "a": 12.0}, "name": "add"}',
                                call).ok


ADD = {'name': 'add', 'arguments': {'a': 3, 'b': 4}}
SEARCH = {'name': 'web_search', 'arguments': {'query': 'jazz'}}


@pytest.mark.parametrize('text,expected,error', [
    ('{"name":"add","arguments":{"a":3,"b":4}', ADD, 'invalid_json'),
    ('call add(3, 4)', ADD, 'invalid_json'),
    ('{"name":"add","arguments":{"a":NaN,"b":4}}', ADD, 'invalid_json'),
    ('{"name":"subtract","arguments":{"a":3,"b":4}}', ADD, 'schema_invalid'),
    ('{"name":"add","arguments":{"a":3}}', ADD, 'schema_invalid'),
    ('{"name":"add","arguments":{"a":3,"b":4,"c":5}}', ADD, 'schema_invalid'),
    ('{"name":"add","arguments":{"a":"3","b":4}}', ADD, 'schema_invalid'),
    ('{"name":"add","arguments":{"a":true,"b":4}}', ADD, 'schema_invalid'),
    ('{"name":"list_events","arguments":{"day":"someday"}}', ADD, 'schema_invalid'),
    ('{"name":"power","arguments":{"base":2,"exponent":2.5}}', ADD, 'schema_invalid'),
    ('[1, 2]', ADD, 'schema_invalid'),
    ('{"name":"multiply","arguments":{"a":3,"b":4}}', ADD, 'wrong_tool'),
    ('{"name":"news_search","arguments":{"topic":"jazz"}}', SEARCH, 'wrong_tool'),
    ('{"name":"add","arguments":{"a":4,"b":3}}', ADD, 'wrong_arguments'),
    ('{"name":"web_search","arguments":{"query":"Jazz"}}', SEARCH, 'wrong_arguments'),
    ('{"name":"web_search","arguments":{"query":"jazz","max_results":5}}', SEARCH,
     'wrong_arguments'),
])
def test_each_kind_of_wrong_call_is_named(text, expected, error):
  verdict = toolcall.evaluate_call(text, expected)
  assert verdict.error == error, verdict
  assert not verdict.ok


def test_summary_rates():
  verdicts = [toolcall.Verdict(None), toolcall.Verdict('wrong_tool'),
              toolcall.Verdict('invalid_json'), toolcall.Verdict(None)]
  s = toolcall.summarize(verdicts)
  assert s['accuracy'] == 0.5 and s['schema_valid'] == 0.75 and s['wrong_tool'] == 0.25
  assert s['tool_accuracy'] == 0.5


def test_registered_sources_serve_request_then_call():
  for name, clusters in [('toolcalls', set(toolcalls.CLUSTERS)),
                         ('toolcalls_units', {'units'})]:
    cfg = config_lib.DataConfig(source=name)
    docs = sources.get_source(cfg, 'train')
    seen = set()
    for i in range(40):
      request, call = docs[i].decode().split('\n')
      call = json.loads(call)
      seen.add(toolcalls.CLUSTER_OF[call['name']])
      assert len(request) == toolcalls.REQUEST_WIDTH
    assert seen <= clusters and len(seen) == len(clusters)
    assert docs[0] != sources.get_source(cfg, 'validation')[0]


CFG = config_lib.build(tiny_config(model={'vocab_size': 384, 'max_len': 192})).model


def test_constrained_calls_from_an_untrained_model_are_all_schema_valid():
  tok = tok_lib.ByteTokenizer()
  batch = EXAMPLES[:6]
  prompts = np.stack([tok.encode(toolcalls.prompt_of(e.request), bos=True)
                      for e in batch])
  variables = nn.unbox(transformer.Transformer(CFG).init(jax.random.key(0), prompts))
  index = toolcall.call_constraint(384)
  out = sampling.generate(variables, prompts, jax.random.key(1), model_cfg=CFG,
                          max_new_tokens=110, sampling=sampling.SamplingConfig(2.0),
                          constraint=index, pad_id=tok_lib.PAD_ID)
  texts = [tok.decode(row[:list(row).index(tok_lib.EOS_ID)] if tok_lib.EOS_ID in row
                      else row) for row in np.asarray(out).tolist()]
  verdicts = [toolcall.evaluate_call(t, e.call) for t, e in zip(texts, batch)]
  assert all(v.error not in ('invalid_json', 'schema_invalid') for v in verdicts), texts
  assert toolcall.summarize(verdicts)['schema_valid'] == 1.0


def test_loss_after_newline_trains_only_on_the_call_and_eos():
  """data.loss_after='\\n' (prompt masking): weight 1 exactly on each document's call
  bytes and EOS, 0 on BOS, the padded request, the newline and padding."""
  tok = tok_lib.ByteTokenizer()
  data = config_lib.DataConfig(source='toolcalls', seq_len=176, batch_size=4,
                               packing='first_fit', loss_after='\n')
  batch = next(pipeline.make_train_iterator(data, tok, seed=0))
  full = next(pipeline.make_train_iterator(
      dataclasses.replace(data, loss_after=''), tok, seed=0))
  assert np.array_equal(batch['inputs'], full['inputs'])
  n_docs = 0
  for inputs, targets, w, seg in zip(batch['inputs'], batch['targets'],
                                     batch['weights'], batch['segment_ids']):
    for doc in set(seg.tolist()) - {0}:
      idx = np.flatnonzero(seg == doc)
      text = bytes(int(t) for t in inputs[idx] if t < 256).decode()
      call = text.split('\n')[1]
      on = idx[w[idx] > 0]
      # The call's bytes then EOS, each once, right after the newline.
      assert bytes(int(t) for t in targets[on][:-1]).decode() == call
      assert targets[on][-1] == tok_lib.EOS_ID
      assert inputs[on[0]] == ord('\n')
      n_docs += 1
  assert n_docs >= 4
  assert 0 < batch['weights'].sum() < full['weights'].sum()


def test_loss_after_needs_first_fit_and_one_token():
  with pytest.raises(config_lib.ConfigError, match='data.loss_after'):
    config_lib.build(tiny_config(data={'source': 'toolcalls', 'loss_after': '\n'}))
  data = config_lib.DataConfig(source='toolcalls', packing='first_fit',
                               loss_after='\n{')
  with pytest.raises(sources.DataError, match='data.loss_after'):
    next(pipeline.make_train_iterator(data, tok_lib.ByteTokenizer(), seed=0))

"""Generators, the OpenAI-compatible server and client, and the MoA family.

The server tests start a real ThreadingHTTPServer on 127.0.0.1 (a free port) and
drive it with `OpenAIClient` and raw HTTP; the MoA tests use deterministic fake
generators whose outcomes are computed by hand.
"""

import http.client
import json

import jax
import numpy as np
import pytest

from lattice import config as config_lib
from lattice.agents import generator, moa, server
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


class Echo:
  """Returns the prompt reversed, cut to max_tokens (for the server tests)."""

  def generate(self, prompts, max_tokens, temperature, constraint=None):
    return [p[::-1][:max_tokens] for p in prompts]

  def max_tokens_for(self, prompt):
    return 64 - len(prompt)


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


# --- server and client -------------------------------------------------------------------


@pytest.fixture(scope='module')
def echo_server():
  with server.Server(Echo(), model_name='echo') as s:
    yield s


def _raw(srv, method, path, body=None, headers=None):
  conn = http.client.HTTPConnection(srv.host, srv.port, timeout=10)
  conn.request(method, path, body=body, headers=headers or {})
  resp = conn.getresponse()
  data = resp.read()
  conn.close()
  return resp.status, json.loads(data)


def test_client_round_trip(echo_server):
  assert echo_server.host == '127.0.0.1'
  client = generator.OpenAIClient(echo_server.url + '/v1', 'echo')
  assert client.models() == ['echo']
  assert client.generate(['abc', 'hello'], 3, 0.0) == ['cba', 'oll']
  chat = generator.OpenAIClient(echo_server.url, 'echo', api='chat')
  assert chat.generate(['xyz'], 8, 0.5) == ['zyx']
  status, out = _raw(echo_server, 'POST', '/v1/completions', json.dumps(
      {'prompt': 'abcdef', 'max_tokens': 10, 'n': 2, 'stop': 'c'}))
  assert status == 200 and [c['text'] for c in out['choices']] == ['fed', 'fed']
  assert out['choices'][0]['finish_reason'] == 'stop'
  assert out['usage']['prompt_tokens'] == 12
  # A client runs MoA over the served model like over a local one.
  tr = moa.majority_vote(['ab', 'cd'], [client, client], max_tokens=4)
  assert tr.answers == ['ba', 'dc']


@pytest.mark.parametrize('method,path,body,status,needle', [
    ('POST', '/v1/completions', b'{not json', 400, 'JSON'),
    ('POST', '/v1/completions', b'[1, 2]', 400, 'object'),
    ('POST', '/v1/completions', b'{"max_tokens": 3}', 400, 'prompt'),
    ('POST', '/v1/completions', b'{"prompt": 5}', 400, 'prompt'),
    ('POST', '/v1/completions', b'{"prompt": "a", "max_tokens": "3"}', 400,
     'max_tokens'),
    ('POST', '/v1/completions', b'{"prompt": "a", "max_tokens": true}', 400,
     'max_tokens'),
    ('POST', '/v1/completions', b'{"prompt": "a", "max_tokens": 0}', 400, 'max_tokens'),
    ('POST', '/v1/completions', b'{"prompt": "a", "max_tokens": 100}', 400, 'room'),
    ('POST', '/v1/completions', b'{"prompt": "a", "temperature": "hot"}', 400,
     'temperature'),
    ('POST', '/v1/completions', b'{"prompt": "a", "n": 99}', 400, 'n:'),
    ('POST', '/v1/chat/completions', b'{"messages": "hi"}', 400, 'messages'),
    ('POST', '/v1/chat/completions', b'{"messages": [{"role": "user"}]}', 400,
     'messages[0]'),
    ('POST', '/v1/nothing', b'{}', 404, 'no route'),
    ('GET', '/v1/completions', None, 405, 'not allowed'),
])
def test_bad_requests_get_json_errors_and_server_stays_up(echo_server, method, path,
                                                          body, status, needle):
  got, out = _raw(echo_server, method, path, body)
  assert got == status
  assert set(out['error']) >= {'message', 'type'} and needle in out['error']['message']
  client = generator.OpenAIClient(echo_server.url, 'echo')
  assert client.generate(['ok'], 2, 0.0) == ['ko']  # still serving


def test_client_raises_api_error(echo_server):
  client = generator.OpenAIClient(echo_server.url, 'echo')
  with pytest.raises(generator.APIError, match='max_tokens') as e:
    client.generate(['a'], 0, 0.0)
  assert e.value.status == 400


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


def test_lattice_generator_served(lattice_gen):
  gen, _ = lattice_gen
  want = gen.generate(['12+34='], 5, 0.0)
  with server.Server(gen, model_name='tiny') as s:
    client = generator.OpenAIClient(s.url, 'tiny')
    assert client.generate(['12+34='], 5, 0.0) == want
    status, out = _raw(s, 'POST', '/v1/completions',
                       json.dumps({'prompt': 'x' * 30, 'max_tokens': 8}))
    assert status == 400 and 'max_tokens' in out['error']['message']
    status, out = _raw(s, 'POST', '/v1/completions', json.dumps(
        {'prompt': 'a', 'response_format': {'type': 'xml'}}))
    assert status == 400 and 'response_format' in out['error']['message']
    assert client.generate(['12+34='], 5, 0.0) == want


def test_lattice_generator_constrained_over_http(lattice_gen):
  import inspect
  from lattice.decode import sampling
  if 'constraint' not in inspect.signature(sampling.generate).parameters:
    pytest.skip('sampling.generate has no constraint argument in this tree')
  gen, _ = lattice_gen
  with server.Server(gen, model_name='tiny') as s:
    client = generator.OpenAIClient(s.url, 'tiny')
    out = client.generate(['12+34=', '1+2='], 6, 1.0, constraint={'regex': '[0-9]{3}'})
    assert all(len(t) == 3 and t.isdigit() for t in out), out
    schema = {'type': 'object', 'properties': {'a': {'type': 'integer'}},
              'required': ['a']}
    text = client.generate(['{'], 12, 1.0, constraint={'json_schema': schema})[0]
    assert isinstance(json.loads(text)['a'], int), text


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

"""`lattice serve` driven by the official `openai` package and raw HTTP.

One module-scoped server (uvicorn in a thread on a free 127.0.0.1 port) serves a
tiny random-init model saved as a training run; every test talks to it over HTTP.
"""

import contextlib
import http.client
import io
import json
import pathlib
import re
import time

import jax
import numpy as np
import openai
import pydantic
import pytest

from lattice import cli
from lattice import config as config_lib
from lattice import serve
from lattice.agents import generator
from lattice.data import tokenizer as tokenizer_lib
from lattice.decode import schema as schema_lib
from lattice.nn import transformer
from lattice.train import loop
from lattice.serve import chat
from lattice.serve import engine as engine_lib
from lattice.serve import tools

from conftest import tiny_config

CFG = config_lib.build(tiny_config(model={'vocab_size': 272, 'max_len': 512})).model
MODEL = 'baseline/seed_0'
TOOL = {'type': 'function', 'function': {
    'name': 'add', 'parameters': {'type': 'object', 'properties': {
        'a': {'type': 'integer'}}, 'required': ['a']}}}
NEG = {'type': 'function', 'function': {
    'name': 'neg', 'parameters': {'type': 'object', 'properties': {
        'x': {'type': 'boolean'}}, 'required': ['x']}}}
PARAMS = {t['function']['name']: t['function']['parameters'] for t in (TOOL, NEG)}


@pytest.fixture(scope='module')
def run_dir(tmp_path_factory):
  """An experiment workdir holding one tiny trained run, baseline/seed_0."""
  cfg = config_lib.build(tiny_config(
      model={'vocab_size': 272, 'max_len': 512},
      train={'steps': 1, 'log_every': 1, 'eval_every': 0, 'progress': False,
             'flops_peak': 1e9},
      optimizer={'warmup_steps': 1}, checkpoint={'every': 1, 'keep': 1}))
  workdir = tmp_path_factory.mktemp('exp')
  out = loop.train_and_evaluate(cfg, workdir / 'baseline' / 'seed_0',
                                devices=jax.devices()[:1])
  return workdir, jax.device_get(out['state'].variables)


@pytest.fixture(scope='module')
def variables(run_dir):
  return {k: v for k, v in run_dir[1].items() if k == 'params'}


@pytest.fixture(scope='module')
def srv(run_dir):
  models = serve.load_models(str(run_dir[0]), slots=2)  # what `lattice serve` runs
  with serve.Server(models) as s:
    yield s


@pytest.fixture(scope='module')
def client(srv):
  return openai.OpenAI(base_url=srv.url + '/v1', api_key='unused', max_retries=0)


@jax.jit
def _forward(variables, ids_1x64):
  return jax.nn.log_softmax(transformer.Transformer(CFG).apply(variables, ids_1x64)[0])


def _log_softmax(variables, ids):
  """The model's log-softmax at each position of `ids` (right-padded to 64 so one
  shape compiles; causal attention makes the padding invisible)."""
  padded = np.full((1, 64), 256, np.int32)
  padded[0, :len(ids)] = ids
  return np.asarray(_forward(variables, padded))[:len(ids)]


def test_models_and_unknown_model_is_404(srv, client):
  assert srv.host == '127.0.0.1'
  assert [m.id for m in client.models.list()] == [MODEL]  # <arm>/seed_<k>
  with pytest.raises(openai.NotFoundError, match='not served'):
    client.completions.create(model='nope', prompt='a', max_tokens=2)
  with pytest.raises(openai.NotFoundError, match='not served'):
    client.chat.completions.create(model='nope', max_tokens=2,
                                   messages=[{'role': 'user', 'content': 'a'}])


def test_streaming_equals_non_streaming(client):
  kw = dict(model=MODEL, prompt=['ab', 'xyz'], max_tokens=6, temperature=0, n=2)
  whole = client.completions.create(**kw)
  chunks = list(client.completions.create(
      **kw, stream=True, stream_options={'include_usage': True}))
  streamed = {}
  for ch in chunks[:-1]:
    streamed[ch.choices[0].index] = streamed.get(ch.choices[0].index, '') + (
        ch.choices[0].text)
  assert [streamed[c.index] for c in whole.choices] == [c.text for c in whole.choices]
  # Usage counts tokens: each prompt once (BOS included), every generated token.
  assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens == 3 + 4
  assert whole.usage.completion_tokens <= 4 * 6
  msgs = [{'role': 'user', 'content': [{'type': 'text', 'text': 'hi'}]}]
  chat_whole = client.chat.completions.create(model=MODEL, messages=msgs, max_tokens=5,
                                              temperature=0)
  chat_stream = client.chat.completions.create(model=MODEL, messages=msgs,
                                               max_tokens=5, temperature=0, stream=True)
  text = ''.join(ch.choices[0].delta.content or '' for ch in chat_stream)
  assert text == chat_whole.choices[0].message.content
  if chat_whole.choices[0].finish_reason == 'length':
    assert chat_whole.usage.completion_tokens == 5


def test_seed_reproduces_sampling(client):
  kw = dict(model=MODEL, prompt='q', max_tokens=8, temperature=1.0, seed=7)
  assert client.completions.create(**kw).choices[0].text == (
      client.completions.create(**kw).choices[0].text)


def test_logprobs_equal_log_softmax(client, variables):
  out = client.completions.create(model=MODEL, prompt='hey', max_tokens=3,
                                  temperature=0, echo=True, logprobs=2)
  lp = out.choices[0].logprobs
  assert out.choices[0].text.startswith('hey')
  tokens = [ord(t) if len(t) == 1 else int(t[-2:], 16) for t in lp.tokens]
  ids = [257] + tokens
  want = _log_softmax(variables, ids)
  got = np.array(lp.token_logprobs)
  np.testing.assert_allclose(got, [want[j, ids[j + 1]] for j in range(len(tokens))],
                             atol=2e-4)
  assert all(len(t) == 2 and max(t.values()) >= g - 1e-6
             for t, g in zip(lp.top_logprobs, got))
  chat_out = client.chat.completions.create(
      model=MODEL, messages=[{'role': 'user', 'content': 'hey'}], max_tokens=3,
      temperature=0, logprobs=True, top_logprobs=3)
  content = chat_out.choices[0].logprobs.content
  assert len(content[0].top_logprobs) == 3
  # Greedy: the chosen token is the most likely one.
  assert all(c.logprob == pytest.approx(c.top_logprobs[0].logprob) for c in content)
  # Chat logprobs are the log-softmax too (raw template: the prompt is BOS + 'hey').
  ids = [257, *b'hey'] + [c.bytes[0] if c.bytes else tokenizer_lib.EOS_ID
                          for c in content]
  want = _log_softmax(variables, ids)
  np.testing.assert_allclose([c.logprob for c in content],
                             [want[3 + j, ids[4 + j]] for j in range(len(content))],
                             atol=2e-4)


def test_tool_call_round_trip(client):
  first = client.chat.completions.create(
      model=MODEL, messages=[{'role': 'user', 'content': '1+2?'}], tools=[TOOL],
      tool_choice={'type': 'function', 'function': {'name': 'add'}}, max_tokens=12,
      temperature=1.0, seed=0)
  msg = first.choices[0].message
  assert first.choices[0].finish_reason == 'tool_calls' and msg.content is None
  call = msg.tool_calls[0]
  assert call.function.name == 'add'
  assert schema_lib.validate(json.loads(call.function.arguments),
                             TOOL['function']['parameters'])
  history = [{'role': 'user', 'content': '1+2?'}, msg.model_dump(exclude_none=True),
             {'role': 'tool', 'tool_call_id': call.id, 'content': '3'}]
  second = client.chat.completions.create(model=MODEL, messages=history, tools=[TOOL],
                                          tool_choice='none', max_tokens=4,
                                          temperature=0)
  assert second.choices[0].message.role == 'assistant'
  prompt = chat.raw_template(history, [TOOL])
  assert '<tool_call>{"name":"add","arguments":' in prompt and prompt.endswith('\n3')


def test_constraint_longer_than_max_tokens_is_400(client):
  with pytest.raises(openai.BadRequestError, match='max_tokens.*guided_regex'):
    client.completions.create(model=MODEL, prompt='a', max_tokens=3,
                              extra_body={'guided_regex': '[0-9]{5}'})
  schema = {'type': 'object', 'properties': {'a': {'type': 'integer'}}, 'required': ['a']}
  with pytest.raises(openai.BadRequestError, match='max_tokens'):
    client.chat.completions.create(
        model=MODEL, messages=[{'role': 'user', 'content': 'x'}], max_tokens=3,
        response_format={'type': 'json_schema', 'json_schema': {'name': 'r',
                                                                'schema': schema}})
  out = client.completions.create(model=MODEL, prompt='a', max_tokens=7, temperature=1,
                                  extra_body={'guided_json': schema})
  assert schema_lib.parses_and_validates(out.choices[0].text, schema)
  assert out.choices[0].finish_reason == 'stop'  # complete JSON, whatever its length
  # The SDK's parse() sends a strict json_schema and rejects finish_reason=length.

  class Answer(pydantic.BaseModel):
    a: int

  parsed = client.chat.completions.parse(
      model=MODEL, messages=[{'role': 'user', 'content': 'x'}], response_format=Answer,
      max_tokens=7, temperature=1.0, seed=1)
  assert isinstance(parsed.choices[0].message.parsed.a, int)


def test_strict_json_schema_refuses_what_a_lenient_one_leaves_out(client):
  # An optional member with an unsupported pattern (a lookahead): left out and named
  # in `warnings` without `strict`; OpenAI's `strict: true` makes it a 400.
  schema = {'type': 'object', 'required': ['n'], 'properties': {
      'n': {'type': 'integer'}, 'p': {'type': 'string', 'pattern': '(?=a)b'}}}
  fmt = lambda strict: {'type': 'json_schema',
                        'json_schema': {'name': 'r', 'schema': schema, 'strict': strict}}
  out = client.chat.completions.create(
      model=MODEL, messages=[{'role': 'user', 'content': 'x'}], max_tokens=8,
      temperature=1.0, seed=3, response_format=fmt(False))
  assert json.loads(out.choices[0].message.content).keys() == {'n'}
  assert any('/properties/p' in w and 'never written' in w
             for w in out.model_extra['warnings'])
  with pytest.raises(openai.BadRequestError, match='pattern'):
    client.chat.completions.create(
        model=MODEL, messages=[{'role': 'user', 'content': 'x'}], max_tokens=8,
        response_format=fmt(True))


@pytest.mark.parametrize('method,path,body', [
    ('POST', '/v1/nothing', b'{"prompt": "a"}'),
    ('GET', '/v1/completions', b'{"prompt": "a"}'),
    ('POST', '/v1/completions', b'{"prompt": "' + b'a' * (2 << 20) + b'"}'),
])
def test_error_keeps_the_keep_alive_connection_clean(srv, method, path, body):
  conn = http.client.HTTPConnection(srv.host, srv.port, timeout=30)
  conn.request(method, path, body=body, headers={'Content-Type': 'application/json'})
  resp = conn.getresponse()
  assert resp.status in (404, 405, 413) and 'error' in json.loads(resp.read())
  conn.request('POST', '/v1/completions', body=json.dumps(
      {'prompt': 'ok', 'max_tokens': 2, 'temperature': 0}),
               headers={'Content-Type': 'application/json'})
  resp = conn.getresponse()
  assert resp.status == 200, resp.read()
  assert json.loads(resp.read())['usage']['completion_tokens'] >= 1
  conn.close()


@pytest.mark.parametrize('path,body,status,needle', [
    ('/v1/completions', b'{not json', 400, 'JSON'),
    ('/v1/completions', b'[1, 2]', 400, 'object'),
    ('/v1/completions', b'{"max_tokens": 3}', 400, 'prompt'),
    ('/v1/completions', b'{"prompt": 5}', 400, 'prompt'),
    ('/v1/completions', b'{"prompt": "a", "max_tokens": "3"}', 400, 'max_tokens'),
    ('/v1/completions', b'{"prompt": "a", "max_tokens": true}', 400, 'max_tokens'),
    ('/v1/completions', b'{"prompt": "a", "max_tokens": 0}', 400, 'max_tokens'),
    ('/v1/completions', b'{"prompt": "a", "max_tokens": 600}', 400, 'room'),
    ('/v1/completions', b'{"prompt": "a", "temperature": "hot"}', 400, 'temperature'),
    ('/v1/completions', b'{"prompt": "a", "n": 99}', 400, 'n:'),
    ('/v1/completions', b'{"prompt": "a", "stop": [""]}', 400, 'stop'),
    ('/v1/completions', b'{"prompt": "a", "guided_regex": "("}', 400, 'guided_regex'),
    ('/v1/chat/completions', b'{"messages": "hi"}', 400, 'messages'),
    ('/v1/chat/completions', b'{"messages": [{"role": "user"}]}', 400, 'messages[0]'),
    ('/v1/chat/completions', b'{"messages": [{"role": "user", "content": "a"}], '
     b'"tool_choice": "required"}', 400, 'tool_choice'),
    ('/v1/chat/completions', b'{"messages": [{"role": "user", "content": "a"}], '
     b'"tools": [' + json.dumps(TOOL).encode() + b'], "tool_choice": "required", '
     b'"max_tokens": 20}', 400, 'max_tokens: the shortest tool call'),
    ('/v1/chat/completions', b'{"messages": [{"role": "user", "content": "a"}], '
     b'"tools": [' + json.dumps(TOOL).encode() + b'], "max_tool_calls": 0}', 400,
     'max_tool_calls'),
    ('/v1/chat/completions', b'{"messages": [{"role": "tool", "content": "3"}]}', 400,
     'messages[0].tool_call_id: required'),
])
def test_bad_requests_get_json_errors(srv, client, path, body, status, needle):
  conn = http.client.HTTPConnection(srv.host, srv.port, timeout=30)
  conn.request('POST', path, body=body, headers={'Content-Type': 'application/json'})
  resp = conn.getresponse()
  out = json.loads(resp.read())
  conn.close()
  assert resp.status == status, out
  assert needle in out['error']['message'], out
  assert client.completions.create(model=MODEL, prompt='ok', max_tokens=1).choices


def test_openai_client_generator_over_the_server(srv):
  completions = generator.OpenAIClient(srv.url + '/v1', MODEL)
  chat_client = generator.OpenAIClient(srv.url, MODEL, api='chat')
  a = completions.generate(['12+34=', '1+2='], 4, 0.0)
  assert len(a) == 2 and a == completions.generate(['12+34=', '1+2='], 4, 0.0)
  assert all(t.isdigit() and len(t) == 3 for t in
             completions.generate(['1'], 5, 1.0, constraint={'regex': '[0-9]{3}'}))
  assert len(chat_client.generate(['hi'], 3, 0.0)) == 1
  with pytest.raises(generator.APIError, match='max_tokens') as e:
    completions.generate(['a'], 0, 0.0)
  assert e.value.status == 400


def test_engine_greedy_matches_full_forward(srv, variables):
  """Continuous batching does not change a sequence: greedy tokens equal the
  argmax of the full forward, whatever shares the step (5 sequences, 2 slots)."""
  eng = srv.models[0].engine
  done = []
  seqs = [engine_lib.Sequence(np.array([257, *p], np.int32), 5, temperature=0.0,
                              on_done=lambda s, e: done.append(e))
          for p in ([65, 66], [70], [80, 81, 82, 83], [90] * 20, [])]
  for s in seqs:
    eng.submit(s)
  deadline = time.time() + 120
  while len(done) < 5 and time.time() < deadline:
    time.sleep(0.05)
  assert done == [None] * 5
  for s in seqs:
    ids = [*s.prompt_ids, *s.tokens]
    lp = _log_softmax(variables, ids)  # one forward over prompt + output
    P = len(s.prompt_ids)
    assert s.tokens == [int(np.argmax(lp[j])) for j in range(P - 1, len(ids) - 1)]


def test_find_runs_and_missing_checkpoint_is_one_line(tmp_path, capsys):
  for arm in ('baseline', 'moe'):
    (tmp_path / arm / 'seed_0' / 'checkpoints' / '4').mkdir(parents=True)
  (tmp_path / 'moe' / 'seed_1').mkdir()
  assert sorted(serve.find_runs(tmp_path)) == ['baseline/seed_0', 'moe/seed_0']
  assert list(serve.find_runs(tmp_path / 'moe' / 'seed_0')) == ['seed_0']
  for argv in (['--workdir', str(tmp_path / 'moe' / 'seed_1')],
               ['--workdir', str(tmp_path), '--model', 'moe/seed_1']):
    with pytest.raises(SystemExit) as e:
      cli.main(['serve', *argv])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith('lattice: error: no checkpoint in ') and '\n' not in err
  assert 'runs found: baseline/seed_0, moe/seed_0' in err
  with pytest.raises(SystemExit):
    cli.main(['serve', '--workdir', str(tmp_path), '--max-tool-calls', '0'])
  assert capsys.readouterr().err.strip() == (
      'lattice: error: --max-tool-calls: expected 1..64, got 0')


def _chunked(srv, body_parts):
  conn = http.client.HTTPConnection(srv.host, srv.port, timeout=30)
  conn.request('POST', '/v1/completions', body=iter(body_parts), encode_chunked=True,
               headers={'Content-Type': 'application/json'})
  resp = conn.getresponse()
  out = json.loads(resp.read())
  conn.close()
  return resp.status, out


def test_chunked_bodies(srv):
  status, out = _chunked(srv, [b'{"prompt": "ab", ', b'"max_tokens": 2}'])
  assert status == 200 and out['usage']['prompt_tokens'] == 3
  status, out = _chunked(srv, [b'{"prompt": "'] + [b'a' * (1 << 16)] * 20 + [b'"}'])
  assert status == 413 and 'body' in out['error']['message']


def test_stop_strings_and_token_prompts(client):
  free = client.completions.create(model=MODEL, prompt='hello', max_tokens=8,
                                   temperature=0).choices[0].text
  stop = free[3:5]
  if not stop or '\ufffd' in stop:
    pytest.skip(f'greedy output {free!r} has no usable stop string')
  kw = dict(model=MODEL, prompt='hello', max_tokens=8, temperature=0,
            stop=[stop, 'never ' + stop])
  cut = client.completions.create(**kw).choices[0]
  assert cut.text == free[:free.index(stop)] and cut.finish_reason == 'stop'
  streamed = ''.join(ch.choices[0].text for ch in
                     client.completions.create(**kw, stream=True))
  assert streamed == cut.text
  # Token ids (what lm-eval sends) are the same prompt as its text.
  ids = client.completions.create(model=MODEL, prompt=list(b'hello'), max_tokens=8,
                                  temperature=0)
  assert ids.choices[0].text == free and ids.usage.prompt_tokens == 6


def _calls(message):
  return [(c.function.name, c.function.arguments) for c in message.tool_calls or []]


def test_parallel_tool_calls_round_trip(client):
  """Several calls in one turn (n=8 seeded choices of a random model, so some
  write one call and some more), streamed as the SDK accumulates them, at most one
  with parallel_tool_calls=false, and a second turn with one tool result per call."""
  msgs = [{'role': 'user', 'content': '1+2? not true?'}]
  for seed in (3, 4, 5, 6):  # until some choice writes several calls (seed 3 does)
    kw = dict(model=MODEL, messages=msgs, tools=[TOOL, NEG], tool_choice='required',
              max_tokens=100, temperature=1.0, seed=seed, n=8)
    whole = client.chat.completions.create(**kw)
    counts = []
    for choice in whole.choices:
      assert choice.finish_reason == 'tool_calls' and choice.message.content is None
      for name, args in _calls(choice.message):  # each under its own tool's schema
        assert schema_lib.validate(json.loads(args), PARAMS[name])
      ids = {c.id for c in choice.message.tool_calls}
      assert len(ids) == len(choice.message.tool_calls)
      counts.append(len(choice.message.tool_calls))
    if max(counts) >= 2:
      break
  assert min(counts) >= 1 and max(counts) >= 2, counts
  assert max(counts) <= tools.DEFAULT_MAX_CALLS
  # Streaming: delta.tool_calls pieces with index, accumulated by the SDK itself.
  with client.chat.completions.stream(**kw) as stream:
    final = stream.get_final_completion()
  assert [_calls(c.message) for c in final.choices] == [
      _calls(c.message) for c in whole.choices]
  assert [c.finish_reason for c in final.choices] == ['tool_calls'] * 8
  # parallel_tool_calls=false: one call per turn; max_tool_calls bounds it too.
  one = client.chat.completions.create(**kw, parallel_tool_calls=False)
  assert [len(c.message.tool_calls) for c in one.choices] == [1] * 8
  two = client.chat.completions.create(**kw, extra_body={'max_tool_calls': 2})
  assert max(len(c.message.tool_calls) for c in two.choices) == 2
  with pytest.raises(openai.BadRequestError, match='max_tool_calls: at most'):
    client.chat.completions.create(**kw, extra_body={'max_tool_calls': 64})
  # The second turn: the assistant's calls, then one tool result per tool_call_id.
  msg = whole.choices[counts.index(max(counts))].message
  history = msgs + [msg.model_dump(exclude_none=True)] + [
      {'role': 'tool', 'tool_call_id': c.id, 'content': f'result {i}'}
      for i, c in enumerate(msg.tool_calls)]
  second = client.chat.completions.create(model=MODEL, messages=history,
                                          tools=[TOOL, NEG], max_tokens=4, temperature=0)
  assert second.choices[0].message.role == 'assistant'
  prompt = chat.raw_template(history, [TOOL, NEG])
  assert prompt.count(tools.MARKER) == max(counts) and prompt.endswith('\nresult 1')
  with pytest.raises(openai.BadRequestError, match=r'messages\[3\].tool_call_id'):
    client.chat.completions.create(model=MODEL, max_tokens=2, messages=history[:3] + [
        {'role': 'tool', 'tool_call_id': 'call_unknown', 'content': 'x'}])


def _accumulate(chunks):
  """Per choice: (content, [(name, arguments)], finish_reason) from raw chunks,
  tool-call pieces merged by their index as the SDK does."""
  out = {}
  for ch in chunks:
    for c in ch.choices:
      text, calls, _ = out.get(c.index, ('', {}, None))
      text += c.delta.content or ''
      for piece in c.delta.tool_calls or []:
        name, args = calls.get(piece.index, ('', ''))
        fn = piece.function
        calls[piece.index] = (name + (fn.name or ''), args + (fn.arguments or ''))
      out[c.index] = (text, calls, c.finish_reason or out.get(c.index, (0, 0, None))[2])
  return [(t or None, [calls[j] for j in sorted(calls)], f)
          for t, calls, f in (out[i] for i in sorted(out))]


def test_auto_tool_choice_streams_like_non_streaming(client):
  kw = dict(model=MODEL, messages=[{'role': 'user', 'content': 'hi'}],
            tools=[TOOL, NEG], max_tokens=60, temperature=1.0, seed=5, n=4)
  whole = client.chat.completions.create(**kw)
  streamed = _accumulate(client.chat.completions.create(**kw, stream=True))
  assert streamed == [(c.message.content or None, _calls(c.message), c.finish_reason)
                      for c in whole.choices]
  for choice in whole.choices:
    for name, args in _calls(choice.message):
      assert schema_lib.validate(json.loads(args), PARAMS[name])


def test_readme_serving_snippet_runs_as_written(srv):
  """The README's serving block (its Python heredoc) against this server: only the
  base URL is changed. (The MoA block after it loads a local generator too, ~15 s
  of compiling: it is checked by hand against the quickstart run.)"""
  readme = (pathlib.Path(__file__).resolve().parent.parent / 'README.md').read_text()
  block = re.search(r"```bash\nlattice serve --workdir=runs/baseline --slots 8 &.*?\n"
                    r"python - <<'PY'\n(.*?)\nPY\n", readme, re.S)
  assert block, 'README: the serving block is gone'
  url = 'http://127.0.0.1:8000/v1'
  assert url in block.group(1)
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    exec(block.group(1).replace(url, srv.url + '/v1'), {})  # pylint: disable=exec-used
  assert ' call_' in out.getvalue() and 'add' in out.getvalue()

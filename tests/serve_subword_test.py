"""`lattice serve` serves a run trained with a subword tokenizer (SentencePiece,
trained here on local text): prompts, streamed text, logprob tokens and constrained
output all go through the run's own vocabulary."""

import json

import jax
import openai
import pytest

from lattice import config as config_lib
from lattice import serve
from lattice.data import tokenizer as tokenizer_lib
from lattice.data import tokenizer_train
from lattice.decode import schema as schema_lib
from lattice.train import loop

from conftest import tiny_config

TEXT = 'def add(x, y):\n    return x + y  # naïve\n\nclass Point:\n    pass\n'
MODEL = 'spm'
SCHEMA = {'type': 'object', 'properties': {'a': {'type': 'integer'}}, 'required': ['a']}


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  """A one-step smoke run with `data.tokenizer=sentencepiece:PATH` (vocab 320)."""
  corpus = tmp_path_factory.mktemp('corpus')
  for i in range(40):
    (corpus / f'doc{i}.txt').write_text(TEXT * (1 + i % 3) + f'value_{i} = {i * 7}\n')
  data = {'source': 'text', 'paths': str(corpus), 'val_fraction': 0.1}
  spm = str(tmp_path_factory.mktemp('tok') / 'spm.model')
  tokenizer_train.train(config_lib.build({'data': data}).data, 320, spm, 'spm-bpe')
  cfg = config_lib.build(tiny_config(
      model={'max_len': 256}, data={**data, 'tokenizer': f'sentencepiece:{spm}',
                                    'eval_batches': 1},
      train={'steps': 1, 'log_every': 1, 'eval_every': 0, 'progress': False,
             'flops_peak': 1e9},
      optimizer={'warmup_steps': 1}, checkpoint={'every': 1, 'keep': 1}))
  workdir = tmp_path_factory.mktemp('exp') / MODEL
  loop.train_and_evaluate(cfg, workdir, devices=jax.devices()[:1])
  return workdir, tokenizer_lib.make_tokenizer(f'sentencepiece:{spm}')


@pytest.fixture(scope='module')
def client(run):
  models = serve.load_models(str(run[0]), slots=2)   # what `lattice serve` runs
  assert models[0].tok.vocab_size == 320
  with serve.Server(models) as s:
    yield openai.OpenAI(base_url=s.url + '/v1', api_key='unused', max_retries=0)


def test_completion_text_and_logprob_tokens_use_the_run_vocabulary(client, run):
  _, tok = run
  kw = dict(model=MODEL, prompt='def add(x', max_tokens=12, temperature=0, seed=0)
  done = client.completions.create(logprobs=2, **kw)
  text, lp = done.choices[0].text, done.choices[0].logprobs
  assert len(lp.tokens) == done.usage.completion_tokens
  # Each logprob token is a piece of the SentencePiece vocabulary, and they spell
  # the text (or end with <eos>).
  pieces = {b.decode('utf-8', 'replace') for b in tok.token_bytes() if b}
  assert all(t in pieces or t.startswith(('<', 'bytes:')) for t in lp.tokens)
  # The prompt was encoded with the run's tokenizer: usage counts its pieces + BOS.
  assert done.usage.prompt_tokens == len(tok.encode('def add(x', bos=True))
  streamed = ''.join(c.choices[0].text for c in
                     client.completions.create(stream=True, **kw) if c.choices)
  assert streamed == text


def test_json_schema_output_over_subword_pieces(client):
  out = client.chat.completions.create(
      model=MODEL, messages=[{'role': 'user', 'content': 'a?'}], max_tokens=40,
      temperature=1.0, seed=1,
      response_format={'type': 'json_schema',
                       'json_schema': {'name': 'a', 'schema': SCHEMA}})
  assert schema_lib.validate(json.loads(out.choices[0].message.content), SCHEMA)


def test_parallel_tool_calls_over_subword_pieces(client):
  """The marker, separator and calls are spelled in the run's own pieces; every
  call parses and validates (the byte-level walk of tools is in serve_tools_test)."""
  tool = {'type': 'function', 'function': {'name': 'f', 'parameters': SCHEMA}}
  out = client.chat.completions.create(
      model=MODEL, messages=[{'role': 'user', 'content': 'a?'}], tools=[tool],
      tool_choice='required', max_tokens=60, temperature=1.0, seed=2, n=2)
  for choice in out.choices:
    assert choice.finish_reason == 'tool_calls'
    for call in choice.message.tool_calls:
      assert call.function.name == 'f'
      assert schema_lib.validate(json.loads(call.function.arguments), SCHEMA)

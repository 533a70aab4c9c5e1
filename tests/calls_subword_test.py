"""Tool calls decode with the run's own tokenizer: a SentencePiece run's constrained
calls are schema-valid calls over its subword pieces (lattice/agents/calls.py)."""

import jax

from lattice import config as config_lib
from lattice import model as model_lib
from lattice.agents import calls, toolcall
from lattice.data import tokenizer_train
from lattice.data.tasks import toolcalls

from conftest import tiny_config


def test_constrained_calls_over_subword_pieces_are_valid(tmp_path):
  corpus = tmp_path / 'corpus'
  corpus.mkdir()
  examples = toolcalls.generate(60, 1, 'train')
  for i, e in enumerate(examples):
    (corpus / f'doc{i}.txt').write_text(toolcalls.format_example(e) + '\n')
  data = {'source': 'text', 'paths': str(corpus), 'val_fraction': 0.1}
  spm = str(tmp_path / 'spm.model')
  tokenizer_train.train(config_lib.build({'data': data}).data, 320, spm, 'spm-bpe')
  cfg = config_lib.build(tiny_config(
      model={'max_len': 224, 'vocab_size': 384},
      data={**data, 'tokenizer': f'sentencepiece:{spm}'}))
  model = model_lib.make_model(cfg.model, False)
  variables = model.init(jax.random.key(0), model_lib.init_batch(cfg))
  requests = [e.request for e in examples[:3]]
  texts = calls.answer(cfg, variables, requests, constrained=True, batch=4, max_new=150)
  assert len(texts) == 3
  for text, e in zip(texts, examples[:3]):
    # An untrained model: the arguments are wrong, but every call parses and fits
    # the schema of some tool.
    assert toolcall.evaluate_call(text, e.call).error not in (
        'invalid_json', 'schema_invalid'), text

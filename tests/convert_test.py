"""lattice.convert: tiny random transformers models in, same logits out, and back.

Each model is built here by `transformers` (nothing downloaded), saved with
safetensors, imported into a lattice run, and compared with transformers' own
forward pass on the same tokens (float32, max |diff| <= 1e-4) and greedy generation
(32 tokens identical); the plain decoders are exported back and reloaded by
transformers with the original's logits.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip('torch', reason='the test extra (torch) is not installed')
transformers = pytest.importorskip('transformers',
                                   reason='the test extra (transformers) is not installed')
pytest.importorskip('safetensors', reason='the test extra (safetensors) is not installed')

from lattice.convert import ConvertError, export_hf, import_hf  # noqa: E402
from lattice.decode import sampling  # noqa: E402
from lattice.nn import transformer  # noqa: E402
from lattice.train import artifacts  # noqa: E402

ATOL = 1e-4
COMMON = dict(vocab_size=320, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
              rms_norm_eps=1e-5)


def _randomize(model, seed: int) -> None:
  """Weights big enough that the logits are far from uniform, norms off 1, biases on."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      noise = torch.randn(p.shape, generator=g)
      if 'norm' in name:
        p.copy_(1.0 + 0.2 * noise)
      elif p.ndim == 1:  # biases
        p.copy_(0.3 * noise)
      else:
        p.copy_(noise / p.shape[-1] ** 0.5)
    for name, buf in model.named_buffers():
      if 'e_score_correction_bias' in name:
        buf.copy_(0.05 * torch.randn(buf.shape, generator=g))


def _save(tmp_path, config, seed=0):
  torch.manual_seed(seed)
  model = transformers.AutoModelForCausalLM.from_config(config).eval()
  _randomize(model, seed)
  hf_dir = tmp_path / 'hf'
  model.save_pretrained(hf_dir, safe_serialization=True)
  return model, hf_dir


def _hf_logits(model, tokens: np.ndarray) -> np.ndarray:
  with torch.no_grad():
    return model(torch.from_numpy(tokens)).logits.float().numpy()


def _restore(run):
  """(Config, variables) of an imported run, on one device."""
  from lattice.train import checkpoint, loop
  cfg = artifacts.load_config(run)
  setup = loop.build(cfg, devices=jax.devices()[:1])
  with checkpoint.Checkpointer(run / 'checkpoints', setup.cfg.checkpoint) as ckpt:
    state = ckpt.restore(setup.abstract_state)
  return setup.cfg, state.variables


def _tokens(vocab: int, shape=(2, 24), seed=0) -> np.ndarray:
  return np.random.default_rng(seed).integers(0, vocab, shape).astype(np.int64)


def _check_logits_and_greedy(model, run) -> None:
  tokens = _tokens(COMMON['vocab_size'])
  want = _hf_logits(model, tokens)
  cfg, variables = _restore(run)
  got = np.asarray(jax.jit(transformer.Transformer(cfg.model).apply)(variables, tokens))
  assert np.abs(got - want).max() <= ATOL, np.abs(got - want).max()

  prompt = tokens[:1, :8]
  with torch.no_grad():
    hf_out = model.generate(torch.from_numpy(prompt), max_new_tokens=32, do_sample=False,
                            min_new_tokens=32, pad_token_id=0)[0, 8:].numpy()
  ours = sampling.generate(variables,
                           jnp.asarray(prompt, jnp.int32), jax.random.key(0),
                           model_cfg=cfg.model, max_new_tokens=32,
                           sampling=sampling.SamplingConfig(temperature=0.0))
  np.testing.assert_array_equal(np.asarray(ours)[0], hf_out)


DENSE = {
    'llama': lambda: transformers.LlamaConfig(**COMMON, tie_word_embeddings=False),
    'llama3_tied': lambda: transformers.LlamaConfig(
        **COMMON, tie_word_embeddings=True, rope_scaling={
            'rope_type': 'llama3', 'factor': 8.0, 'low_freq_factor': 1.0,
            'high_freq_factor': 4.0, 'original_max_position_embeddings': 16},
        rope_theta=500_000.0),
    'mistral': lambda: transformers.MistralConfig(**COMMON, sliding_window=None),
    'qwen2_bias': lambda: transformers.Qwen2Config(**COMMON, tie_word_embeddings=True),
    'qwen3': lambda: transformers.Qwen3Config(**COMMON, head_dim=16),
}


@pytest.mark.parametrize('name', sorted(DENSE))
def test_dense_import_matches_transformers_and_exports_back(tmp_path, name):
  model, hf_dir = _save(tmp_path, DENSE[name]())
  run = tmp_path / 'run'
  cfg = import_hf(hf_dir, run)
  assert cfg.model.ffn.kind == 'dense'
  _check_logits_and_greedy(model, run)

  out = export_hf(run, tmp_path / 'exported')
  back = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
  tokens = _tokens(COMMON['vocab_size'], seed=1)
  diff = np.abs(_hf_logits(back, tokens) - _hf_logits(model, tokens)).max()
  assert diff <= ATOL, diff


MOE = {
    'mixtral': lambda: transformers.MixtralConfig(
        **COMMON, num_local_experts=4, num_experts_per_tok=2),
    'dots1_deepseek_v3_moe': lambda: transformers.Dots1Config(
        **COMMON, n_routed_experts=8, num_experts_per_tok=3, n_shared_experts=1,
        moe_intermediate_size=16, first_k_dense_replace=0, n_group=4, topk_group=2,
        norm_topk_prob=True, routed_scaling_factor=2.5),
}


@pytest.mark.parametrize('name', sorted(MOE))
def test_moe_import_matches_transformers(tmp_path, name):
  model, hf_dir = _save(tmp_path, MOE[name]())
  run = tmp_path / 'run'
  cfg = import_hf(hf_dir, run)
  assert cfg.model.ffn.kind == 'moe'
  _check_logits_and_greedy(model, run)


def _tiny_llama_dir(tmp_path):
  return _save(tmp_path, transformers.LlamaConfig(**COMMON))


def test_reader_transposes_and_casts_in_chunks(tmp_path, monkeypatch):
  """Several row chunks per tensor (CHUNK_BYTES shrunk): the chunked transpose, cast
  and `out=` reads equal numpy's."""
  import ml_dtypes
  from safetensors.numpy import save_file
  from lattice.convert import safetensors_reader
  rng = np.random.default_rng(0)
  w = rng.standard_normal((37, 11)).astype(ml_dtypes.bfloat16)
  b = rng.standard_normal(29).astype(np.float32)
  (tmp_path / 'config.json').write_text('{}')
  save_file({'w': w, 'b': b}, tmp_path / 'model.safetensors')
  monkeypatch.setattr(safetensors_reader, 'CHUNK_BYTES', 40)  # 1-2 rows of w per chunk
  ckpt = safetensors_reader.HFCheckpoint(tmp_path)
  np.testing.assert_array_equal(ckpt.get('w'), w)
  np.testing.assert_array_equal(ckpt.get('w', transpose=True), w.T)
  np.testing.assert_array_equal(ckpt.get('w', transpose=True, dtype=np.float32),
                                w.T.astype(np.float32))
  np.testing.assert_array_equal(ckpt.get('b', dtype=np.float64), b.astype(np.float64))
  out = np.zeros((2, 11, 37), np.float32)
  ckpt.get('w', transpose=True, dtype=np.float32, out=out[1])
  np.testing.assert_array_equal(out[1], w.T.astype(np.float32))
  assert not out[0].any()
  with pytest.raises(ConvertError, match='missing tensor nope'):
    ckpt.get('nope')

  # Streaming: a transposed read holds its result and one chunk, not a second copy.
  import tracemalloc
  big = rng.standard_normal((512, 1024)).astype(np.float32)  # 2 MiB
  save_file({'big': big}, tmp_path / 'model.safetensors')
  monkeypatch.setattr(safetensors_reader, 'CHUNK_BYTES', 128 << 10)
  ckpt = safetensors_reader.HFCheckpoint(tmp_path)
  del big
  tracemalloc.start()
  got = ckpt.get('big', transpose=True)
  peak = tracemalloc.get_traced_memory()[1]
  tracemalloc.stop()
  assert got.nbytes <= peak < 1.2 * got.nbytes, (peak, got.nbytes)


def test_unsupported_architecture_is_one_line_naming_it(tmp_path, capsys):
  from lattice import cli
  for arch, words in (('DeepseekV3ForCausalLM', 'multi-head latent attention'),
                      ('GPT2LMHeadModel', 'not supported')):
    src = tmp_path / arch
    src.mkdir()
    (src / 'config.json').write_text(json.dumps({'architectures': [arch]}))
    with pytest.raises(ConvertError, match=f'{arch}.*{words}'):
      import_hf(src, tmp_path / 'out')
    with pytest.raises(SystemExit) as exit_info:
      cli.main(['convert', 'hf', '--from', str(src), '--out', str(tmp_path / 'out')])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and arch in err, err


def test_missing_and_unknown_tensors_are_named(tmp_path):
  from safetensors.numpy import load_file, save_file
  _, hf_dir = _tiny_llama_dir(tmp_path)
  tensors = load_file(hf_dir / 'model.safetensors')
  name = 'model.layers.1.self_attn.k_proj.weight'
  save_file({k: v for k, v in tensors.items() if k != name}, hf_dir / 'model.safetensors')
  with pytest.raises(ConvertError, match=f'missing tensor {name}'):
    import_hf(hf_dir, tmp_path / 'out')
  save_file({**tensors, 'model.layers.0.mlp.extra.weight': tensors[name]},
            hf_dir / 'model.safetensors')
  with pytest.raises(ConvertError, match='tensor model.layers.0.mlp.extra.weight .*no place'):
    import_hf(hf_dir, tmp_path / 'out')


def _train_tokenizer(path, vocab_size=300):
  """A tiny byte-level BPE tokenizer trained here (nothing downloaded), saved as
  `path`/tokenizer.json; returns it."""
  import tokenizers
  tok = tokenizers.Tokenizer(tokenizers.models.BPE())
  tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = tokenizers.decoders.ByteLevel()
  trainer = tokenizers.trainers.BpeTrainer(
      vocab_size=vocab_size, special_tokens=['<s>', '</s>'],
      initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
  tok.train_from_iterator(['def main(argv):\n  return argv[0]\n'] * 50
                          + ['the model reads the ids of its own tokenizer'] * 50, trainer)
  tok.save(str(path / 'tokenizer.json'))
  return tok


def test_sharded_checkpoint_own_tokenizer_and_fine_tune_from_it(tmp_path):
  from lattice import config as config_lib
  from lattice import sample
  from lattice.train import loop, rundir
  model = transformers.AutoModelForCausalLM.from_config(
      transformers.LlamaConfig(**COMMON)).eval()
  _randomize(model, 3)
  hf_dir = tmp_path / 'hf'
  model.save_pretrained(hf_dir, max_shard_size='40KB')  # several files + index json
  assert (hf_dir / 'model.safetensors.index.json').is_file()
  trained = _train_tokenizer(hf_dir)
  run = tmp_path / 'run'
  import_hf(hf_dir, run)
  tokens = _tokens(COMMON['vocab_size'], (1, 16))
  cfg, variables = _restore(run)
  got = jax.jit(transformer.Transformer(cfg.model).apply)(variables, tokens)
  assert np.abs(np.asarray(got) - _hf_logits(model, tokens)).max() <= ATOL

  # The run's tokenizer is the model's own copy, used by serve and sample.
  spec = f'hf:{(run / "tokenizer").absolute()}'
  assert cfg.data.tokenizer == spec
  assert (run / 'tokenizer' / 'tokenizer.json').is_file()
  text = 'def main(argv): the model reads'
  want_ids = trained.encode(text).ids
  from lattice.agents import generator
  served = generator.LatticeGenerator.from_workdir(run)  # what `lattice serve` loads
  assert served.model_cfg == cfg.model
  assert list(served.tok.encode(text)) == want_ids
  assert list(sample.run_tokenizer(run).encode(text)) == want_ids  # `lattice sample`

  # Fine-tuning: a fresh run whose model, params and tokenizer come from the
  # imported run.
  ft = config_lib.build({
      'model': {'d_model': 8, 'n_layers': 1},  # replaced by the imported model
      'data': {'seq_len': 16, 'batch_size': 2, 'eval_batches': 1},
      'optimizer': {'lr': 1e-9, 'warmup_steps': 0, 'weight_decay': 0.0},
      'train': {'steps': 1, 'init_from': str(run), 'progress': False, 'flops_peak': 1e12},
      'checkpoint': {'enabled': False}, 'mesh': {'data': 1}})
  result = loop.train_and_evaluate(ft, tmp_path / 'ft', devices=jax.devices()[:1])
  assert result['setup'].cfg.model == cfg.model
  assert result['setup'].cfg.data.tokenizer == spec
  imported = jax.tree.leaves(variables['params'])
  tuned = jax.tree.leaves(result['state'].params)
  assert all(np.allclose(a, b, atol=1e-6) for a, b in zip(imported, tuned))
  # A tokenizer set explicitly is kept.
  explicit = config_lib.replace(ft, **{'data.tokenizer': 'hf:/elsewhere'})
  assert rundir.with_model_of(explicit, run).data.tokenizer == 'hf:/elsewhere'
  # train.init_from_step names one checkpoint of that run: a step it lacks is refused
  # (were the step ignored, its latest checkpoint would load).
  with pytest.raises(config_lib.ConfigError, match='no checkpoint at step 7'):
    loop.train_and_evaluate(config_lib.replace(ft, **{'train.init_from_step': 7}),
                            tmp_path / 'ft7', devices=jax.devices()[:1])


def test_attach_tokenizer_picks_sentencepiece_and_refuses_what_does_not_fit(tmp_path):
  import sentencepiece as spm
  from lattice.convert import importer
  text = tmp_path / 'text.txt'
  text.write_text('the model reads the ids of its own tokenizer\n' * 200)
  spm.SentencePieceTrainer.train(input=str(text), model_prefix=str(tmp_path / 'tokenizer'),
                                 vocab_size=40, model_type='bpe')
  spec, note = importer.attach_tokenizer(tmp_path, ['tokenizer.model'], vocab_size=64)
  assert spec == f'sentencepiece:{tmp_path.absolute() / "tokenizer.model"}' and note is None
  spec, note = importer.attach_tokenizer(tmp_path, ['tokenizer.model'], vocab_size=32)
  assert spec == '' and 'more than the model\'s vocab_size 32' in note
  spec, note = importer.attach_tokenizer(tmp_path, [], vocab_size=64)
  assert spec == '' and 'no tokenizer.json or tokenizer.model' in note


def test_export_of_a_lattice_initialized_model(tmp_path):
  from lattice import config as config_lib
  from lattice.train import checkpoint, loop
  cfg = config_lib.build({
      'model': {'d_model': 32, 'n_layers': 2, 'vocab_size': 320, 'ffn': {'d_ff': 64},
                'attention': {'n_heads': 4, 'n_kv_heads': 2, 'rope_theta': 1000.0}},
      'data': {'seq_len': 16}})
  setup = loop.build(cfg, devices=jax.devices()[:1])
  state = setup.init(jax.random.key(0))
  run = tmp_path / 'run'
  run.mkdir()
  artifacts.save_config(run, setup.cfg)
  with checkpoint.Checkpointer(run / 'checkpoints', setup.cfg.checkpoint) as ckpt:
    ckpt.save(0, state, force=True)
  back = transformers.AutoModelForCausalLM.from_pretrained(
      export_hf(run, tmp_path / 'hf')).eval()
  assert type(back).__name__ == 'LlamaForCausalLM'
  tokens = _tokens(320, (2, 16))
  ours = jax.jit(transformer.Transformer(setup.cfg.model).apply)({'params': state.params},
                                                                 tokens)
  assert np.abs(np.asarray(ours) - _hf_logits(back, tokens)).max() <= ATOL


def test_export_refuses_what_llama_cannot_hold(tmp_path):
  from lattice import config as config_lib
  from lattice.train import artifacts as art
  run = tmp_path / 'run'
  run.mkdir()
  art.save_config(run, config_lib.build({'model': {'ffn': {'kind': 'moe'}}}))
  with pytest.raises(ConvertError, match="model.ffn.kind: 'moe'"):
    export_hf(run, tmp_path / 'hf')

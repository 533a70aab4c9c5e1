"""`medium` and `full` modes: real corpora, subword tokenizers, accelerator defaults.

An experiment's CPU modes (`smoke`, `quick`) train byte-level models on the embedded
stdlib corpus. Its `medium` mode (one accelerator, <= ~2 hours) and `full` mode (the
paper's smallest published configuration) train on a real corpus streamed from the
Hugging Face hub, with a subword tokenizer, bf16 compute (`model.dtype=auto`),
scanned layers and remat. `scale_config` builds such a mode from named entries of
two literal tables, so every experiment names its corpus and tokenizer the same way:

  CORPORA     name -> the HF dataset (streamed), its text field, its eval split and
                      its published size in tokens where the dataset card gives one
  TOKENIZERS  name -> the `data.tokenizer` spec and its vocabulary size

Nothing here downloads anything: the config names the hub data, which is read only
when the mode trains (on a machine with internet). `lattice plan` reads the sizes
from these tables, so it works offline. `model.vocab_size` is set from the table
(rounded up to 128, as `lattice.train.loop` rounds a tokenizer's vocabulary).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import ml_collections

from lattice.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Corpus:
  """A streamed Hugging Face corpus.

  `tokens` is the corpus size in tokens as its source publishes it (counted with
  `tokens_tokenizer`), or 0 when unknown; `lattice plan` uses it for epochs, so an
  epoch count is approximate whenever the run's tokenizer differs.
  """
  hf_name: str
  hf_config: str = ''
  field: str = 'text'
  # Evaluation: (dataset, config, split) of a held-out split; the same dataset's
  # `validation` split where it has one, else C4's validation split.
  eval_hf_name: str = ''
  eval_hf_config: str = ''
  eval_split: str = 'validation'
  tokens: int = 0
  tokens_tokenizer: str = ''
  source: str = ''           # where `tokens` comes from


_C4_EVAL = dict(eval_hf_name='allenai/c4', eval_hf_config='en', eval_split='validation')

CORPORA: dict[str, Corpus] = {
    # Dataset card: "sample-10BT: a subset randomly sampled from the whole dataset of
    # around 10B gpt2 tokens".
    'fineweb-edu': Corpus('HuggingFaceFW/fineweb-edu', 'sample-10BT', **_C4_EVAL,
                          tokens=10_000_000_000, tokens_tokenizer='gpt2',
                          source='HuggingFaceFW/fineweb-edu dataset card'),
    # The whole of FineWeb-Edu; its card: "1.3T tokens" (gpt2 tokens).
    'fineweb-edu-full': Corpus('HuggingFaceFW/fineweb-edu', 'default', **_C4_EVAL,
                               tokens=1_300_000_000_000, tokens_tokenizer='gpt2',
                               source='HuggingFaceFW/fineweb-edu dataset card'),
    # Dodge et al. 2021 ("Documenting Large Webtext Corpora", arXiv 2104.08758),
    # Table 1: C4.EN 156B tokens.
    'c4': Corpus('allenai/c4', 'en', eval_hf_name='allenai/c4', eval_hf_config='en',
                 tokens=156_000_000_000, tokens_tokenizer='t5',
                 source='Dodge et al. 2021, arXiv 2104.08758, Table 1'),
    # Eldan & Li 2023 (arXiv 2305.07759): ~2.1M synthetic short stories; the card
    # gives no token count.
    'tinystories': Corpus('roneneldan/TinyStories', eval_hf_name='roneneldan/TinyStories'),
    # Python files from GitHub (the MTP paper's code models trained on code); the
    # card gives 5.3M files (~50 GB), not a token count.
    # Merity et al. 2016 ("Pointer Sentinel Mixture Models", arXiv 1609.07843),
    # Table 1: WikiText-2 train 2,088,628 tokens (words); the calibration and
    # perplexity set of post-training quantization papers (e.g. NanoQuant).
    'wikitext2': Corpus('Salesforce/wikitext', 'wikitext-2-raw-v1',
                        eval_hf_name='Salesforce/wikitext',
                        eval_hf_config='wikitext-2-raw-v1', eval_split='test',
                        tokens=2_088_628, tokens_tokenizer='words',
                        source='Merity et al. 2016, arXiv 1609.07843, Table 1'),
    'codeparrot': Corpus('codeparrot/codeparrot-clean', field='content',
                         eval_hf_name='codeparrot/codeparrot-clean-valid',
                         eval_split='train'),
}


@dataclasses.dataclass(frozen=True)
class Tokenizer:
  spec: str          # a `data.tokenizer` value (lattice/data/tokenizer.py)
  vocab_size: int    # the tokenizer's own vocabulary (the model pads it to 128)


TOKENIZERS: dict[str, Tokenizer] = {
    'gpt2': Tokenizer('hf:gpt2', 50_257),
    # Llama-2's 32,000-piece SentencePiece model (a public copy; the meta-llama repos
    # are gated).
    'llama2': Tokenizer('hf:hf-internal-testing/llama-tokenizer', 32_000),
    'qwen2.5': Tokenizer('hf:Qwen/Qwen2.5-0.5B', 151_665),
    'qwen3': Tokenizer('hf:Qwen/Qwen3-0.6B', 151_669),
    'starcoder2': Tokenizer('hf:bigcode/starcoder2-3b', 49_152),
}


def padded(vocab_size: int, multiple: int = 128) -> int:
  """`vocab_size` rounded up to a multiple of `multiple` (as lattice.train.loop)."""
  return -(-vocab_size // multiple) * multiple


def data_fields(corpus: str, tokenizer: str) -> dict[str, Any]:
  """The `data` section fields for streaming `corpus` tokenized by `tokenizer`.

  Raises:
    ConfigError: an unknown corpus or tokenizer name (listing the known ones).
  """
  if corpus not in CORPORA:
    raise ConfigError(f'scale corpus: unknown {corpus!r}; choose one of '
                      f'{", ".join(CORPORA)}')
  if tokenizer not in TOKENIZERS:
    raise ConfigError(f'scale tokenizer: unknown {tokenizer!r}; choose one of '
                      f'{", ".join(TOKENIZERS)}')
  c, t = CORPORA[corpus], TOKENIZERS[tokenizer]
  return dict(
      source='hf', hf_name=c.hf_name, hf_config=c.hf_config, hf_split='train',
      hf_streaming=True, field=c.field, tokenizer=t.spec,
      eval=dict(source='hf', hf_name=c.eval_hf_name or c.hf_name,
                hf_config=c.eval_hf_config if c.eval_hf_name else c.hf_config,
                hf_split=c.eval_split, hf_streaming=True, field=c.field))


def corpus_tokens(hf_name: str, hf_config: str = '') -> int | None:
  """The published token count of a CORPORA entry with this dataset, else None."""
  for c in CORPORA.values():
    if c.hf_name == hf_name and c.hf_config == hf_config and c.tokens:
      return c.tokens
  return None


def scale_config(*, d_model: int, n_layers: int, n_heads: int, seq_len: int,
                 batch: int, tokens: int, lr: float, corpus: str, tokenizer: str,
                 warmup: int | None = None, evals: int = 10, checkpoints: int = 10,
                 scan: bool = True, remat: str = 'dots', **model: Any
                 ) -> ml_collections.ConfigDict:
  """A `medium`/`full` mode: an LM trained on `tokens` tokens of `corpus`.

  Args:
    d_model, n_layers, n_heads, seq_len: the model (`model.*`, `data.seq_len`).
    batch: the global batch in sequences (`data.batch_size`).
    tokens: training tokens; steps = ceil(tokens / (batch x seq_len)).
    lr: the peak learning rate (cosine schedule; warmup 1% of steps unless given).
    corpus, tokenizer: names in CORPORA and TOKENIZERS.
    evals, checkpoints: how many evaluations and checkpoints over the run.
    scan, remat: `model.scan_layers` and `model.remat` (on by default at scale).
    **model: further model fields (e.g. ffn=dict(kind='moe', ...)).

  Returns:
    The mode's ConfigDict (one seed, one arm; the experiment sets `arms`/`seeds`).

  Raises:
    ConfigError: an unknown corpus or tokenizer, or a non-positive size.
  """
  for name, v in (('d_model', d_model), ('n_layers', n_layers), ('seq_len', seq_len),
                  ('batch', batch), ('tokens', tokens)):
    if v <= 0:
      raise ConfigError(f'scale {name}: must be positive, got {v}')
  data = data_fields(corpus, tokenizer)
  steps = math.ceil(tokens / (batch * seq_len))
  return ml_collections.ConfigDict(dict(
      model=dict(d_model=d_model, n_layers=n_layers, max_len=seq_len,
                 vocab_size=padded(TOKENIZERS[tokenizer].vocab_size),
                 dtype='auto', scan_layers=scan, remat=remat,
                 attention=dict(n_heads=n_heads), **model),
      data=dict(seq_len=seq_len, batch_size=batch, eval_batches=32, **data),
      optimizer=dict(lr=lr, warmup_steps=max(steps // 100, 1) if warmup is None
                     else warmup),
      train=dict(steps=steps, log_every=max(steps // 200, 1),
                 eval_every=max(steps // evals, 1)),
      checkpoint=dict(every=max(steps // checkpoints, 1)),
      seeds=[0], arms=[dict(name='baseline', overrides={})]))

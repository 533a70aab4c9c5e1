"""Typed, frozen configs: an experiment's ConfigDict in, small dataclasses out.

Each concern (model, attention, linear, ffn, mtp, frontend, data, optimizer, train,
mesh, checkpoint) is its own frozen dataclass, so a layer receives only what it
needs (STYLE rule 4). `build(config_dict)` converts and validates: every error a
user can cause raises `ConfigError` naming the field, before anything compiles.

A kind of each model concern is one file plus one entry in its package's table:
projections `quant.linears.LINEARS`, FFNs `nn.ffns.FFNS`, output heads `mtp.HEADS`,
input stages `multimodal.FRONTENDS`. A kind with fields of its own declares them on
its class as `options`, a frozen dataclass with defaults and a `check(cfg)` method
(e.g. `quant.linear.Quest`, `moe.options.MoEOptions`, `mtp.options.Parallel`,
`multimodal.options.Early`). This module adds those fields to `model.linear` /
`model.ffn` / `model.mtp` / `model.frontend`, so command lines and saved
`config.json` files keep their flat keys (`--config.model.ffn.n_experts=8`), and
`build` runs the selected kind's `check` once; the other kinds' fields are ignored.
`<section>.options` gives the selected kind's typed block. Data sources are the
names of the literal tables `data.sources.SOURCES` (documents),
`data.sources.WINDOW_SOURCES` (token windows) and `data.batches.BATCH_SOURCES`
(whole batches). Those packages import this module only for annotations
(`typing.TYPE_CHECKING`), so reading their tables here makes no cycle.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

import ml_collections

from lattice.errors import ConfigError  # noqa: F401  (re-exported: config.ConfigError)
from lattice.data import batches as batches_lib
from lattice.data import sources as sources_lib
from lattice.mtp import HEADS
from lattice.multimodal import FRONTENDS
from lattice.nn.ffns import FFNS
from lattice.quant.linears import LINEARS

# model.<concern>.kind -> its table; each kind's own fields come from its `options`.
_TABLES = {'linear': LINEARS, 'ffn': FFNS, 'mtp': HEADS, 'frontend': FRONTENDS}
# data.source: the document, token-window and batch sources, in that order.
DATA_SOURCES = (*sources_lib.SOURCES, *sources_lib.WINDOW_SOURCES,
                *batches_lib.BATCH_SOURCES)

# Keys that moved: old dotted path -> where its setting lives now. Setting one is a
# one-line ConfigError; a saved config.json that has one loads (`upgrade_record`).
MOVED_KEYS = {
    'model.frontend.modality_routing': "moved: hard modality routing is the MoE router "
                                       "model.ffn.router='modality'",
    'model.frontend.image_experts': 'moved: now model.ffn.image_experts',
}


def moved_key_error(path: str) -> ConfigError | None:
  """The one-line error for setting a key of `MOVED_KEYS` (None for other keys)."""
  return ConfigError(f'{path}: {MOVED_KEYS[path]}') if path in MOVED_KEYS else None


def upgrade_record(record: dict) -> dict:
  """A config mapping saved by an older lattice (a run's config.json), in today's
  keys: `model.frontend.modality_routing='hard'` becomes `model.ffn.router=
  'modality'` and `model.frontend.image_experts` becomes `model.ffn.image_experts`
  ('learned' routing is the plain router the record already names). Returns a copy;
  other mappings come back unchanged."""
  model = record.get('model')
  frontend = model.get('frontend') if isinstance(model, dict) else None
  if not isinstance(frontend, dict) or not any(
      k.rsplit('.', 1)[-1] in frontend for k in MOVED_KEYS):
    return record
  record = {**record, 'model': {**record['model'], 'frontend': dict(frontend)}}
  frontend = record['model']['frontend']
  ffn = record['model']['ffn'] = dict(record['model'].get('ffn', {}))
  if frontend.pop('modality_routing', 'learned') == 'hard':
    ffn['router'] = 'modality'
  image_experts = frontend.pop('image_experts', 0)
  if image_experts:
    ffn['image_experts'] = image_experts
  return record


class _Kinded:
  """Mixin of a concern section: `options`, the selected kind's typed field block."""
  _TABLE: dict = {}

  @property
  def options(self) -> Any:
    """The kind's `options` dataclass filled from this section, or None if it has none."""
    cls = getattr(self._TABLE.get(self.kind), 'options', None)
    if cls is None:
      return None
    return cls(**{f.name: getattr(self, f.name) for f in dataclasses.fields(cls)})


def _with_kind_fields(name: str, base: type, table: dict, doc: str) -> type:
  """`base` plus every field the kinds in `table` declare in their `options`.

  A field two kinds both declare must agree on type and default (a TypeError at
  import otherwise), so one flat key means one thing whatever the kind.
  """
  own = {f.name for f in dataclasses.fields(base)}
  spec: dict[str, tuple[str, Any, Any]] = {}
  for kind, cls in table.items():
    opts = getattr(cls, 'options', None)
    if opts is None:
      continue
    hints = typing.get_type_hints(opts)
    for f in dataclasses.fields(opts):
      if f.default is dataclasses.MISSING:
        raise TypeError(f'{opts.__qualname__}.{f.name}: an options field needs a default')
      if f.name in own:
        raise TypeError(f'{opts.__qualname__}.{f.name}: shadows model.{name} field')
      if f.name in spec and spec[f.name][1:] != (hints[f.name], f.default):
        raise TypeError(f'{opts.__qualname__}.{f.name}: declared differently by kind '
                        f'{spec[f.name][0]!r}')
      spec.setdefault(f.name, (kind, hints[f.name], f.default))
  fields = [(n, t, dataclasses.field(default=d)) for n, (_, t, d) in spec.items()]
  cls = dataclasses.make_dataclass(
      base.__name__.lstrip('_'), fields, bases=(base, _Kinded), frozen=True,
      namespace={'__doc__': doc, '_TABLE': table, '_OPTIONS': tuple(dict.fromkeys(
          c.options for c in table.values() if getattr(c, 'options', None)))})
  cls.__module__ = __name__
  return cls


@dataclasses.dataclass(frozen=True)
class _LinearConfig:
  kind: str = 'float'          # a quant.linears.LINEARS entry
  use_bias: bool = False


LinearConfig = _with_kind_fields(
    'linear', _LinearConfig, LINEARS,
    """How every projection (attention, FFN, experts, heads) is built: the common
    fields plus each kind's own (QuEST's `quant.linear.Quest`: w_bits, a_bits,
    hadamard, trust; NanoQuant's `quant.nanoquant_linear.NanoQuant`: nq_bits,
    nq_rank_multiple; 'bitnet' is fixed W1.58A8 and has none).""")


@dataclasses.dataclass(frozen=True)
class AttentionConfig:
  n_heads: int = 4
  n_kv_heads: int = 0          # 0: same as n_heads (multi-head); fewer: GQA.
  head_dim: int = 0            # 0: d_model // n_heads.
  rope_theta: float = 10_000.0
  # Training path: einsum (lattice.nn.einsum_attention), xla | cudnn
  # (jax.nn.dot_product_attention) or splash (Pallas's TPU splash-attention kernel,
  # seq_len % 128 == 0; interpreted off TPU, for tests); auto: einsum on CPU, cudnn (flash) on GPU for
  # bf16/fp16 with head_dim % 8 == 0 and <= 128 on compute >= 8.0 and CUDA < 13, no
  # tensor parallelism, even seq_len when packed (XLA otherwise, silently; XLA with a
  # warning where jax refuses cuDNN while tracing), else the library's choice
  # (lattice.nn.attention.train_implementation).
  # Decoding always calls jax.nn.dot_product_attention (einsum: its default).
  implementation: str = 'auto'  # auto | einsum | xla | cudnn | splash
  # Imported checkpoints (lattice/convert): Qwen2 biases on q/k/v only; Qwen3 RMSNorm
  # of each query/key head before RoPE; RoPE frequency scaling as Hugging Face's
  # `rope_scaling` (linear: all frequencies / factor; llama3: Llama 3.1's
  # wavelength-banded rule, transformers' _compute_llama3_parameters).
  qkv_bias: bool = False
  qk_norm: bool = False
  rope_scaling: str = 'none'   # none | linear | llama3
  rope_factor: float = 1.0
  rope_low_freq_factor: float = 1.0
  rope_high_freq_factor: float = 4.0
  rope_original_max_len: int = 8192


@dataclasses.dataclass(frozen=True)
class _FFNConfig:
  kind: str = 'dense'          # a nn.ffns.FFNS entry: dense | moe
  d_ff: int = 0                # 0: the Llama rule, 8/3 * d_model rounded up to 64.
  activation: str = 'swiglu'   # swiglu | geglu | gelu | relu2 | relu2_glu (gated, BitNet 2B4T)


FFNConfig = _with_kind_fields(
    'ffn', _FFNConfig, FFNS,
    """The FFN of every block: the common fields plus each kind's own (MoE's
    `moe.options.MoEOptions`: n_experts, top_k, router, dispatch, ...).""")


@dataclasses.dataclass(frozen=True)
class _MTPConfig:
  kind: str = 'none'           # a mtp.HEADS entry: none | parallel | sequential


MTPConfig = _with_kind_fields(
    'mtp', _MTPConfig, HEADS,
    """Multi-token prediction (lattice/mtp): the common field plus each head kind's own
    (`mtp.options.Parallel`: n, loss_weights, memory_efficient, Gloeckle et al. 2024,
    arXiv 2404.19737; `mtp.options.Sequential`: depth, lam, lam_late,
    lam_switch_step, DeepSeek-V3, arXiv 2412.19437).""")


@dataclasses.dataclass(frozen=True)
class _FrontendConfig:
  kind: str = 'text'           # a multimodal.FRONTENDS entry: text | early | late


FrontendConfig = _with_kind_fields(
    'frontend', _FrontendConfig, FRONTENDS,
    """The input stage (lattice/multimodal): the common field plus each frontend
    kind's own (`multimodal.options.Images` shared by early and late fusion: image
    and patch size, the document mix; `multimodal.options.Early`:
    image_tokens, codebook_size, image_loss; `multimodal.options.Late`: the ViT
    encoder's enc_d_model, enc_layers, enc_heads).""")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  d_model: int = 128
  n_layers: int = 2
  vocab_size: int = 0          # 0: the tokenizer's vocabulary rounded up to 128.
  max_len: int = 256
  norm_eps: float = 1e-6
  tie_embeddings: bool = True
  scan_layers: bool = False
  remat: str = 'none'          # none | full | dots
  # Compute (activation) dtype. 'auto': bfloat16 on GPU/TPU, float32 on CPU
  # (jax.default_backend() when the model is built). Parameters (master weights) and
  # optimizer state stay param_dtype; logits and losses are always float32.
  dtype: str = 'auto'
  param_dtype: str = 'float32'
  # SubLN (BitNet b1.58 2B4T, arXiv 2504.12285): an RMSNorm on the inputs of the
  # attention-output and FFN-down projections (dense FFN only).
  subln: bool = False
  attention: AttentionConfig = AttentionConfig()
  linear: LinearConfig = LinearConfig()
  ffn: FFNConfig = FFNConfig()
  mtp: MTPConfig = MTPConfig()
  frontend: FrontendConfig = FrontendConfig()

  @property
  def n_heads(self) -> int:
    return self.attention.n_heads

  @property
  def n_kv_heads(self) -> int:
    return self.attention.n_kv_heads or self.attention.n_heads

  @property
  def head_dim(self) -> int:
    return self.attention.head_dim or self.d_model // self.attention.n_heads

  @property
  def d_ff(self) -> int:
    if self.ffn.d_ff:
      return self.ffn.d_ff
    return -(-(8 * self.d_model // 3) // 64) * 64

  @property
  def expert_d_ff(self) -> int:
    return self.ffn.expert_d_ff or max(self.d_ff // self.ffn.top_k, 1)


@dataclasses.dataclass(frozen=True)
class DataConfig:
  source: str = 'stdlib'       # stdlib | text | jsonl | arrayrecord | hf | shapes (image+text)
  paths: str = ''              # files, folders or globs, comma separated
  field: str = 'text'          # JSONL / HF record field holding the text
  hf_name: str = ''
  hf_split: str = 'train'
  hf_config: str = ''          # the dataset's config name (load_dataset's 2nd argument)
  hf_data_files: str = ''      # comma-separated files/globs (the json/parquet/text builders)
  hf_revision: str = ''        # a commit, tag or branch of the dataset repo
  hf_streaming: bool = False   # stream instead of downloading the whole split first
  # byte | sentencepiece:PATH | hf:NAME_OR_DIR (lattice/data/tokenizer.py)
  tokenizer: str = 'byte'
  # Weighted corpora, shares of training tokens: [{'source':..., 'paths':..., 'weight':
  # w}, ...]; and a separate eval corpus {'source':..., 'paths':...} (data/mixture.py).
  mixture: tuple = ()
  eval: dict = dataclasses.field(default_factory=dict)
  seq_len: int = 128
  batch_size: int = 16         # global batch, split over processes
  val_fraction: float = 0.02
  shuffle_seed: int = 0
  num_workers: int = 0         # grain worker processes; 0 runs in-process
  # concat: documents concatenated and cut into windows (no padding; a document may
  # span windows). first_fit: whole documents first-fit into padded windows, never
  # split (a document longer than the window is truncated): one example per row for
  # tasks whose target must see its whole prompt (data/pipeline.py).
  packing: str = 'concat'
  eval_batches: int = 8
  # Loss only on the tokens after the first occurrence of this one-token text in each
  # document (instruction tuning's prompt masking, TRL's completion-only collator);
  # '' trains on every token; a document without it trains on nothing. Needs
  # packing=first_fit (data/pipeline.py).
  loss_after: str = ''


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  lr: float = 3e-3
  schedule: str = 'cosine'     # constant | cosine | wsd | two_stage
  warmup_steps: int = 100
  min_lr_ratio: float = 0.1
  decay_fraction: float = 0.2  # wsd: final fraction of steps spent decaying
  stage2_lr_ratio: float = 0.67  # two_stage: LR after the halfway drop (BitNet)
  b1: float = 0.9
  b2: float = 0.95
  eps: float = 1e-8
  weight_decay: float = 0.1
  stage2_weight_decay: float = 0.0
  clip_norm: float = 1.0       # 0 disables clipping
  decay_norms_and_embeddings: bool = False


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  steps: int = 1000
  seed: int = 0
  log_every: int = 50
  eval_every: int = 500        # 0: only at the end
  nonfinite: str = 'stop'      # stop | skip
  progress: bool = True
  tensorboard: bool = False
  flops_peak: float = 0.0      # 0: measure a large matmul at start for MFU
  # Gradient accumulation: the step scans over this many microbatches of the global
  # batch (data.batch_size) and applies one update (lattice/train/step.py).
  microbatches: int = 1
  # 'A:B': write a jax.profiler trace of steps A+1..B (1-based; A < B) to
  # workdir/profile, readable by TensorBoard/XProf. '': no trace.
  profile_steps: str = ''
  # A run directory (e.g. `lattice convert hf --out RUN`) whose params start a fresh
  # run, and whose model section replaces this config's (fine-tuning).
  init_from: str = ''
  # The checkpoint step of `init_from` to start from; 0: its latest.
  init_from_step: int = 0


@dataclasses.dataclass(frozen=True)
class MeshConfig:
  data: int = -1               # -1: all devices not used by the other axes
  fsdp: int = 1
  expert: int = 1
  tensor: int = 1


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
  enabled: bool = True
  every: int = 500
  keep: int = 2
  async_save: bool = True


@dataclasses.dataclass(frozen=True)
class Config:
  model: ModelConfig = ModelConfig()
  data: DataConfig = DataConfig()
  optimizer: OptimizerConfig = OptimizerConfig()
  train: TrainConfig = TrainConfig()
  mesh: MeshConfig = MeshConfig()
  checkpoint: CheckpointConfig = CheckpointConfig()


_CHOICES = {
    'model.remat': ('none', 'full', 'dots'),
    'model.dtype': ('auto', 'float32', 'bfloat16', 'float16'),
    'model.param_dtype': ('float32', 'bfloat16'),
    'model.attention.implementation': ('auto', 'xla', 'cudnn', 'einsum', 'splash'),
    'model.attention.rope_scaling': ('none', 'linear', 'llama3'),
    'model.ffn.activation': ('swiglu', 'geglu', 'gelu', 'relu2', 'relu2_glu'),
    'data.source': DATA_SOURCES,
    'data.packing': ('concat', 'first_fit'),
    'optimizer.schedule': ('constant', 'cosine', 'wsd', 'two_stage'),
    'train.nonfinite': ('stop', 'skip'),
}


def _check_type(path: str, value: Any, want: Any) -> Any:
  if want is bool:
    if not isinstance(value, bool):
      raise ConfigError(f'{path}: expected true/false, got {value!r}')
    return value
  if want is int:
    if isinstance(value, bool) or not isinstance(value, int):
      raise ConfigError(f'{path}: expected an integer, got {value!r}')
    return value
  if want is float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      raise ConfigError(f'{path}: expected a number, got {value!r}')
    return float(value)
  if want is str:
    if not isinstance(value, str):
      raise ConfigError(f'{path}: expected a string, got {value!r}')
    return value
  return value


def _from_mapping(cls, mapping: Any, path: str):
  if isinstance(mapping, cls):
    return mapping
  if isinstance(mapping, ml_collections.ConfigDict):
    mapping = mapping.to_dict()
  if not isinstance(mapping, dict):
    raise ConfigError(f'{path or "config"}: expected a section, got {mapping!r}')
  hints = typing.get_type_hints(cls)
  names = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(mapping) - names)
  if unknown:
    moved = moved_key_error(f'{path}.{unknown[0]}' if path else unknown[0])
    if moved:
      raise moved
    raise ConfigError(
        f'{path + "." if path else ""}{unknown[0]}: unknown config key '
        f'(known keys of {path or "config"}: {", ".join(sorted(names))})')
  kwargs = {}
  for name, value in mapping.items():
    want = hints[name]
    field_path = f'{path}.{name}' if path else name
    if dataclasses.is_dataclass(want):
      kwargs[name] = _from_mapping(want, value, field_path)
    else:
      kwargs[name] = _check_type(field_path, value, want)
  return cls(**kwargs)


def _positive(path: str, value: int | float, allow_zero: bool = False) -> None:
  if value < 0 or (value == 0 and not allow_zero):
    raise ConfigError(f'{path}: must be {"non-negative" if allow_zero else "positive"}, '
                      f'got {value}')


def profile_range(t: TrainConfig) -> tuple[int, int] | None:
  """train.profile_steps 'A:B' -> (A, B), the trace covering steps A+1..B; None
  when empty. Raises ConfigError unless 0 <= A < B <= train.steps."""
  spec = t.profile_steps.strip()
  if not spec:
    return None
  try:
    a, b = (int(x) for x in spec.split(':'))
  except ValueError:
    raise ConfigError(f'train.profile_steps: expected A:B (e.g. 10:15), got '
                      f'{t.profile_steps!r}') from None
  if not 0 <= a < b <= t.steps:
    raise ConfigError(f'train.profile_steps: need 0 <= A < B <= train.steps='
                      f'{t.steps}, got {t.profile_steps!r}')
  return a, b


def validate(cfg: Config) -> Config:
  """Checks values and combinations; returns cfg unchanged or raises ConfigError."""
  for path, choices in _CHOICES.items():
    section, *rest = path.split('.')
    value = getattr(cfg, section)
    for part in rest:
      value = getattr(value, part)
    if value not in choices:
      raise ConfigError(f'{path}: {value!r} is not one of {", ".join(choices)}')
  for concern, table in _TABLES.items():
    kind = getattr(cfg.model, concern).kind
    if kind not in table:
      raise ConfigError(f'model.{concern}.kind: {kind!r} is not one of '
                        f'{", ".join(table)}')
  m, a = cfg.model, cfg.model.attention
  for name in ('d_model', 'n_layers', 'max_len', 'norm_eps'):
    _positive(f'model.{name}', getattr(m, name))
  _positive('model.attention.n_heads', a.n_heads)
  _positive('model.attention.rope_theta', a.rope_theta)
  _positive('model.attention.rope_factor', a.rope_factor)
  _positive('model.attention.rope_original_max_len', a.rope_original_max_len)
  if a.rope_scaling == 'llama3' and not a.rope_high_freq_factor > a.rope_low_freq_factor > 0:
    raise ConfigError(f'model.attention.rope_high_freq_factor: must exceed '
                      f'rope_low_freq_factor > 0, got {a.rope_high_freq_factor} and '
                      f'{a.rope_low_freq_factor}')
  _positive('model.attention.n_kv_heads', a.n_kv_heads, allow_zero=True)
  _positive('model.attention.head_dim', a.head_dim, allow_zero=True)
  _positive('model.ffn.d_ff', m.ffn.d_ff, allow_zero=True)
  for concern in _TABLES:  # the selected kind's own fields, checked by their owner
    options = getattr(m, concern).options
    if options is not None:
      options.check(cfg)
  _positive('model.vocab_size', m.vocab_size, allow_zero=True)
  if not a.head_dim and m.d_model % a.n_heads:
    raise ConfigError(f'model.attention.n_heads: {a.n_heads} heads do not divide '
                      f'model.d_model={m.d_model} (or set model.attention.head_dim)')
  if m.n_heads % m.n_kv_heads:
    raise ConfigError(f'model.attention.n_kv_heads: {m.n_kv_heads} must divide '
                      f'n_heads={m.n_heads}')
  if m.head_dim % 2:
    raise ConfigError(f'model.attention.head_dim: RoPE needs an even head_dim, '
                      f'got {m.head_dim}')
  d = cfg.data
  _positive('data.seq_len', d.seq_len)
  if a.implementation == 'splash' and d.seq_len % 128:
    raise ConfigError(f"model.attention.implementation: 'splash' needs data.seq_len "
                      f"a multiple of 128 (the kernel's blocks), got {d.seq_len}")
  _positive('data.batch_size', d.batch_size)
  _positive('data.num_workers', d.num_workers, allow_zero=True)
  _positive('data.eval_batches', d.eval_batches, allow_zero=True)
  _positive('data.shuffle_seed', d.shuffle_seed, allow_zero=True)  # numpy SeedSequence
  if not 0.0 <= d.val_fraction < 1.0:
    raise ConfigError(f'data.val_fraction: must be in [0, 1), got {d.val_fraction}')
  if d.seq_len > m.max_len:
    raise ConfigError(f'data.seq_len: {d.seq_len} exceeds model.max_len={m.max_len}')
  if d.source in ('text', 'jsonl', 'arrayrecord') and not d.paths:
    raise ConfigError(f'data.paths: data.source={d.source!r} needs files, folders or '
                      f'globs in data.paths')
  if d.source == 'hf' and not d.hf_name:
    raise ConfigError("data.hf_name: data.source='hf' needs a dataset name")
  if d.loss_after and d.packing != 'first_fit':
    raise ConfigError(f'data.loss_after: needs data.packing=first_fit (a document '
                      f'split across windows loses its prompt), got {d.packing!r}')
  o = cfg.optimizer
  _positive('optimizer.lr', o.lr)
  _positive('optimizer.warmup_steps', o.warmup_steps, allow_zero=True)
  _positive('optimizer.weight_decay', o.weight_decay, allow_zero=True)
  _positive('optimizer.clip_norm', o.clip_norm, allow_zero=True)
  _positive('optimizer.eps', o.eps)
  _positive('optimizer.stage2_lr_ratio', o.stage2_lr_ratio, allow_zero=True)
  _positive('optimizer.stage2_weight_decay', o.stage2_weight_decay, allow_zero=True)
  for name in ('b1', 'b2'):
    if not 0.0 <= getattr(o, name) < 1.0:
      raise ConfigError(f'optimizer.{name}: must be in [0, 1), got {getattr(o, name)}')
  if not 0.0 <= o.min_lr_ratio <= 1.0:
    raise ConfigError(f'optimizer.min_lr_ratio: must be in [0, 1], got {o.min_lr_ratio}')
  if not 0.0 < o.decay_fraction <= 1.0:
    raise ConfigError(f'optimizer.decay_fraction: must be in (0, 1], got '
                      f'{o.decay_fraction}')
  t = cfg.train
  _positive('train.steps', t.steps)
  _positive('train.log_every', t.log_every)
  _positive('train.eval_every', t.eval_every, allow_zero=True)
  _positive('train.flops_peak', t.flops_peak, allow_zero=True)
  _positive('train.microbatches', t.microbatches)
  if d.batch_size % t.microbatches:
    raise ConfigError(f'train.microbatches: {t.microbatches} does not divide '
                      f'data.batch_size={d.batch_size}')
  profile_range(t)
  _positive('train.init_from_step', t.init_from_step, allow_zero=True)
  if t.init_from_step and not t.init_from:
    raise ConfigError('train.init_from_step: set train.init_from (the run whose '
                      'checkpoint step it names)')
  if o.warmup_steps > t.steps:
    raise ConfigError(f'optimizer.warmup_steps: {o.warmup_steps} exceeds '
                      f'train.steps={t.steps}')
  for name in ('fsdp', 'expert', 'tensor'):
    _positive(f'mesh.{name}', getattr(cfg.mesh, name))
  if cfg.mesh.data != -1 and cfg.mesh.data <= 0:
    raise ConfigError(f'mesh.data: must be positive, or -1 for all devices not used '
                      f'by the other axes, got {cfg.mesh.data}')
  c = cfg.checkpoint
  _positive('checkpoint.every', c.every)
  _positive('checkpoint.keep', c.keep)
  return cfg


SECTIONS = tuple(f.name for f in dataclasses.fields(Config))


def build(config: ml_collections.ConfigDict | dict) -> Config:
  """The typed, validated Config of an experiment's ConfigDict.

  Only the sections in `SECTIONS` are read; an experiment may keep its own keys
  (arms, seeds, eval settings) beside them. A mapping saved by an older lattice
  (keys in `MOVED_KEYS`) is read in today's keys (`upgrade_record`).
  """
  if isinstance(config, ml_collections.ConfigDict):
    config = config.to_dict()
  sections = upgrade_record({k: v for k, v in config.items() if k in SECTIONS})
  return validate(_from_mapping(Config, sections, ''))


def replace(cfg: Config, **overrides: Any) -> Config:
  """Returns cfg with dotted-path overrides, e.g. replace(cfg, **{'model.d_model': 64})."""
  as_dict = dataclasses.asdict(cfg)
  for path, value in overrides.items():
    node = as_dict
    *parents, leaf = path.split('.')
    for part in parents:
      if part not in node or not isinstance(node[part], dict):
        raise ConfigError(f'{path}: unknown config key')
      node = node[part]
    if leaf not in node:
      raise moved_key_error(path) or ConfigError(f'{path}: unknown config key')
    node[leaf] = value
  return validate(_from_mapping(Config, as_dict, ''))


def to_config_dict(cfg: Config) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dataclasses.asdict(cfg))


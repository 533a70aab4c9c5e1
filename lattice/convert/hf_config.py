"""A Hugging Face `config.json` -> lattice's model config, per architecture.

Supported (each maps onto lattice's one decoder exactly, with no approximation):
  LlamaForCausalLM (Llama 2, 3.x incl. rope_scaling llama3/linear), MistralForCausalLM,
  Qwen2ForCausalLM (q/k/v biases), Qwen3ForCausalLM (q/k RMSNorm),
  MixtralForCausalLM (softmax top-k router, renormalized),
  Dots1ForCausalLM (DeepSeek-V3's MoE: sigmoid router with the correction bias,
  group-limited routing, shared experts, route scale; with Qwen3 attention),
  BitNetForCausalLM (BitNet b1.58 2B4T: SubLN, squared-ReLU GLU; its released
  packed ternary weights with a per-tensor `weight_scale` (bitlinear, offline), or
  float latent weights (autobitlinear, online)) -> `model.linear.kind=bitnet` with
  `model.subln` (see `lattice.convert.ternary`).
Refused with a one-line `ConvertError` naming what lattice lacks: DeepSeek-V3/V2
(multi-head latent attention), dense layers before MoE ones, other rope types,
biases on the output/FFN projections, sliding windows beyond `max_len`, ...
"""

from __future__ import annotations

from typing import Any

from lattice import config as config_lib


class ConvertError(ValueError):
  """A checkpoint lattice cannot convert; the message names the field or tensor."""


DENSE = {'LlamaForCausalLM': 'llama', 'MistralForCausalLM': 'mistral',
         'Qwen2ForCausalLM': 'qwen2', 'Qwen3ForCausalLM': 'qwen3',
         # transformers' class, and the spelling of the release's own modeling code.
         'BitNetForCausalLM': 'bitnet', 'BitnetForCausalLM': 'bitnet'}
MOE = {'MixtralForCausalLM': 'mixtral', 'Dots1ForCausalLM': 'dots1'}
MISSING = {
    'DeepseekV3ForCausalLM': 'multi-head latent attention (MLA: q_lora/kv_lora '
                             'low-rank projections with a decoupled RoPE key)',
    'DeepseekV2ForCausalLM': 'multi-head latent attention (MLA)',
    'Qwen2MoeForCausalLM': 'a sigmoid-gated shared expert',
    'Glm4MoeForCausalLM': 'partial rotary embeddings (partial_rotary_factor)',
}
SUPPORTED = (*DENSE, *MOE)
# Activation names in HF configs -> lattice's gated FFN kinds.
ACTIVATIONS = {'silu': 'swiglu', 'swish': 'swiglu', 'gelu_pytorch_tanh': 'geglu',
               'relu2': 'relu2_glu'}
# BitNet's `quantization_config` layouts lattice imports (transformers' BitNetQuantConfig
# and transformers/integrations/bitnet.py), as (linear_class, quantization_mode):
#   bitlinear offline: the 2B4T release; packed uint8 ternary codes + weight_scale,
#     y = x_int8 @ codes / (x_scale * weight_scale)  -> family 'bitnet'
#   autobitlinear online: float latent weights quantized in the forward pass with the
#     same absmean / absmax rules as lattice's BitLinear  -> family 'bitnet_latent'
BITNET_LAYOUTS = {('bitlinear', 'offline'): 'bitnet',
                  ('autobitlinear', 'online'): 'bitnet_latent'}


def architecture(hf: dict[str, Any]) -> str:
  """The one `architectures` entry of `hf`, checked to be convertible."""
  archs = hf.get('architectures') or []
  if len(archs) != 1:
    raise ConvertError(f'config.json: architectures: expected one entry, got {archs!r}')
  arch = archs[0]
  if arch in MISSING:
    raise ConvertError(f'config.json: architectures: {arch} needs {MISSING[arch]}, '
                       f'which lattice does not have; supported: {", ".join(SUPPORTED)}')
  if arch not in SUPPORTED:
    raise ConvertError(f'config.json: architectures: {arch} is not supported; '
                       f'supported: {", ".join(SUPPORTED)}')
  return arch


def _rope(hf: dict[str, Any]) -> dict[str, Any]:
  """RoPE fields from either transformers 5's `rope_parameters` or the older
  `rope_theta` + `rope_scaling` (what checkpoints on the Hub carry)."""
  params = dict(hf.get('rope_parameters') or {})
  scaling = dict(hf.get('rope_scaling') or {})
  theta = params.get('rope_theta', hf.get('rope_theta', 10_000.0))
  merged = {**scaling, **params}
  kind = merged.get('rope_type', merged.get('type', 'default'))
  if hf.get('partial_rotary_factor', 1.0) != 1.0:
    raise ConvertError('config.json: partial_rotary_factor: lattice rotates the whole '
                       'head (needs 1.0)')
  out = {'rope_theta': float(theta)}
  if kind == 'default':
    return out
  if kind == 'linear':
    return {**out, 'rope_scaling': 'linear', 'rope_factor': float(merged['factor'])}
  if kind == 'llama3':
    return {**out, 'rope_scaling': 'llama3', 'rope_factor': float(merged['factor']),
            'rope_low_freq_factor': float(merged['low_freq_factor']),
            'rope_high_freq_factor': float(merged['high_freq_factor']),
            'rope_original_max_len': int(merged['original_max_position_embeddings'])}
  raise ConvertError(f'config.json: rope_scaling: rope_type {kind!r} is not supported '
                     f'(lattice has default, linear and llama3)')


def _max_len(hf: dict[str, Any], arch: str, max_len: int | None) -> int:
  limit = int(hf.get('max_position_embeddings', 4096))
  window = hf.get('sliding_window')
  layer_types = hf.get('layer_types') or []
  uses_window = window and (arch == 'mistral' or hf.get('use_sliding_window')
                            or 'sliding_attention' in layer_types)
  if max_len is None:
    # The KV cache is allocated at max_len; Hub models declare up to 128k.
    max_len = min(limit, 4096)
  if uses_window and max_len > window:
    raise ConvertError(f'max_len: {max_len} exceeds the checkpoint\'s sliding_window='
                       f'{window}; lattice has no sliding-window attention, so it is '
                       f'exact only up to the window (pass max_len <= {window})')
  return max_len


def _check_false(hf: dict[str, Any], *names: str) -> None:
  for name in names:
    if hf.get(name):
      raise ConvertError(f'config.json: {name}: {hf[name]!r} is not supported (lattice '
                         f'has biases only on q/k/v)')


def model_config(hf: dict[str, Any], *, max_len: int | None = None,
                 param_dtype: str = 'float32') -> config_lib.ModelConfig:
  """lattice's ModelConfig for the HF config `hf` (a parsed config.json).

  Raises ConvertError naming the first field lattice cannot represent exactly.
  """
  arch = architecture(hf)
  family = {**DENSE, **MOE}[arch]
  act = hf.get('hidden_act', 'silu')
  if act not in ACTIVATIONS:
    raise ConvertError(f'config.json: hidden_act: {act!r} is not supported '
                       f'({", ".join(ACTIVATIONS)})')
  d_model, n_heads = int(hf['hidden_size']), int(hf['num_attention_heads'])
  attention = dict(
      n_heads=n_heads,
      n_kv_heads=int(hf.get('num_key_value_heads') or n_heads),
      head_dim=int(hf.get('head_dim') or d_model // n_heads),
      qkv_bias=family == 'qwen2',
      qk_norm=family in ('qwen3', 'dots1'),
      **_rope(hf))
  # Qwen2's q/k/v biases are unconditional; elsewhere attention_bias would also put
  # one on the output projection.
  _check_false(hf, 'mlp_bias', *(() if family == 'qwen2' else ('attention_bias',)))
  ffn: dict[str, Any] = dict(d_ff=int(hf['intermediate_size']), activation=ACTIVATIONS[act])
  extra: dict[str, Any] = {}
  if family == 'bitnet':
    _bitnet_family(hf)
    extra = dict(linear={'kind': 'bitnet'}, subln=True)
  if family == 'mixtral':
    ffn.update(kind='moe', n_experts=int(hf['num_local_experts']),
               top_k=int(hf['num_experts_per_tok']),
               expert_d_ff=int(hf['intermediate_size']), router='softmax',
               norm_topk=True)
  elif family == 'dots1':
    if hf.get('first_k_dense_replace', 0):
      raise ConvertError(f'config.json: first_k_dense_replace: '
                         f'{hf["first_k_dense_replace"]} dense layers before the MoE '
                         f'ones; lattice puts the same FFN kind in every layer (needs 0)')
    ffn.update(kind='moe', n_experts=int(hf['n_routed_experts']),
               top_k=int(hf['num_experts_per_tok']),
               expert_d_ff=int(hf['moe_intermediate_size']),
               n_shared=int(hf.get('n_shared_experts') or 0), router='sigmoid',
               norm_topk=bool(hf.get('norm_topk_prob', False)),
               route_scale=float(hf.get('routed_scaling_factor', 1.0)),
               n_groups=int(hf.get('n_group') or 1),
               topk_groups=int(hf.get('topk_group') or 1), router_bias=True)
  try:
    cfg = config_lib.build({'model': dict(
        d_model=d_model, n_layers=int(hf['num_hidden_layers']),
        vocab_size=int(hf['vocab_size']), max_len=_max_len(hf, family, max_len),
        norm_eps=float(hf.get('rms_norm_eps', 1e-6)),
        tie_embeddings=bool(hf.get('tie_word_embeddings', False)),
        param_dtype=param_dtype, dtype='float32',
        attention=attention, ffn=ffn, **extra)})
  except KeyError as e:
    raise ConvertError(f'config.json: {e.args[0]}: missing') from None
  except config_lib.ConfigError as e:
    raise ConvertError(f'config.json does not fit lattice: {e}') from None
  return cfg.model


def _bitnet_family(hf: dict[str, Any]) -> str:
  """'bitnet' or 'bitnet_latent' from BitNet's quantization_config (BITNET_LAYOUTS),
  else a ConvertError naming the field lattice's import does not read."""
  quant = hf.get('quantization_config')
  if not quant:
    raise ConvertError('config.json: quantization_config: missing; a BitNet import '
                       'reads quant_method bitnet (the 2B4T release)')
  if quant.get('quant_method') != 'bitnet':
    raise ConvertError(f'config.json: quantization_config.quant_method: '
                       f'{quant.get("quant_method")!r} is not supported (needs \'bitnet\')')
  if quant.get('use_rms_norm'):
    raise ConvertError('config.json: quantization_config.use_rms_norm: True is not '
                       'supported (lattice\'s BitLinear has no input RMSNorm; 2B4T uses '
                       'SubLN instead)')
  layout = (quant.get('linear_class', 'bitlinear'), quant.get('quantization_mode', 'offline'))
  if layout not in BITNET_LAYOUTS:
    raise ConvertError(f'config.json: quantization_config.linear_class/quantization_mode: '
                       f'{layout[0]}/{layout[1]} is not supported (lattice imports '
                       f'{", ".join("/".join(k) for k in BITNET_LAYOUTS)})')
  return BITNET_LAYOUTS[layout]


def family(hf: dict[str, Any]) -> str:
  """'llama' | 'mistral' | 'qwen2' | 'qwen3' | 'bitnet' | 'bitnet_latent' | 'mixtral' |
  'dots1' (the tensor layout `names.plan` maps)."""
  name = {**DENSE, **MOE}[architecture(hf)]
  return _bitnet_family(hf) if name == 'bitnet' else name

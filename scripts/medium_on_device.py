r"""A shrunk `medium` run on one accelerator: tokens/s, MFU vs the chip's peak, memory.

  python scripts/medium_on_device.py --out $OUT/medium.json \
      [--config experiments/baseline_lm.py:medium] [--steps 300] [--n_layers N]
      [--batch B] [--seq_len L] [--d_model D]

The model, batch, sequence length, schedule and precision are the `medium` mode's
(its first arm; `--config` unset: DEFAULT_MEDIUM below, a GPT-2-small-sized medium
on FineWeb-Edu with the GPT-2 tokenizer), `model.dtype=auto` (bf16 on GPU/TPU),
scanned layers and remat as the mode sets them; only `train.steps` (and any of
`--n_layers --batch --seq_len --d_model` given) shrink it. A device machine has no
internet, so instead of streaming the corpus it trains on a token file written
here: ids drawn from a Zipf law (exponent 1.1) over the mode's vocabulary, so the
embedding, softmax and every matmul have the mode's shapes; the loss means nothing.

Written to `--out` (JSON): the device, the config, the final metrics of the run
(`tokens_per_s`, `mfu` against the chip's published dense bf16 peak from
lattice/chips.py, `mfu_measured` against a timed matmul, `step_s`, `data_wait_s`,
`compute_s`, measured by the train loop over its timed steps), and memory: the
device's `memory_stats()` peak (`peak_bytes_in_use`; absent on CPU) and the compiled
train step's `memory_analysis()` sizes.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

from lattice import config as config_lib  # pylint: disable=wrong-import-position
from lattice import experiment, plan  # pylint: disable=wrong-import-position
from lattice.run import arms as arms_lib, config_file, scale  # pylint: disable=wrong-import-position
from lattice.train import loop  # pylint: disable=wrong-import-position

ZIPF_EXPONENT = 1.1   # natural-language token frequencies are roughly Zipfian


def default_medium():
  """A GPT-2-small-sized medium (124M-ish, 12 x 768, seq 1024, batch 32) on
  FineWeb-Edu, GPT-2 tokenizer: the shape most medium modes are near."""
  return experiment.pick_mode('medium', {'medium': lambda: scale.scale_config(
      d_model=768, n_layers=12, n_heads=12, seq_len=1024, batch=32,
      tokens=2_500_000_000, lr=6e-4, corpus='fineweb-edu', tokenizer='gpt2')})


def write_tokens(path: pathlib.Path, vocab: int, n_tokens: int, seed: int = 0) -> None:
  """`n_tokens` Zipf-distributed ids in [3, vocab) as a 1-D .npy (uint16 if it fits)."""
  rng = np.random.default_rng(seed)
  ids = 3 + (rng.zipf(ZIPF_EXPONENT, n_tokens) - 1) % (vocab - 3)
  np.save(path, ids.astype(np.uint16 if vocab <= 65_536 else np.uint32))


def shrunk(config, args, token_file: str) -> config_lib.Config:
  """The first arm of `config` with `args`' shrinking and the local token file."""
  name, overrides = arms_lib.arm_list(config)[0]
  cfg = arms_lib.arm_config(config, overrides, seed=0)
  changes = {'train.steps': args.steps, 'train.eval_every': 0,
             'train.log_every': max(args.steps // 10, 1), 'train.progress': False,
             'optimizer.warmup_steps': max(args.steps // 10, 1),
             'checkpoint.enabled': False,
             'data.source': 'tokens', 'data.paths': token_file, 'data.tokenizer': 'byte',
             'data.eval': {}, 'data.mixture': (), 'data.hf_streaming': False,
             'data.eval_batches': 2}
  if args.n_layers:
    changes['model.n_layers'] = args.n_layers
  if args.d_model:   # keep the head width: fewer heads (and no GQA) at a smaller width
    a = cfg.model.attention
    head_dim = a.head_dim or cfg.model.d_model // a.n_heads
    changes.update({'model.d_model': args.d_model, 'model.attention.n_kv_heads': 0,
                    'model.attention.n_heads': max(args.d_model // head_dim, 1)})
  if args.batch:
    changes['data.batch_size'] = args.batch
  if args.seq_len:
    changes['data.seq_len'] = args.seq_len
    changes['model.max_len'] = max(args.seq_len, cfg.model.max_len)
  print(f'[medium_on_device] arm {name}: {changes}')
  return config_lib.replace(cfg, **changes)


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--config', default='', help='FILE.py:MODE (default: built in)')
  parser.add_argument('--out', required=True, help='JSON file to write')
  parser.add_argument('--steps', type=int, default=300)
  parser.add_argument('--n_layers', type=int, default=0)
  parser.add_argument('--d_model', type=int, default=0)
  parser.add_argument('--batch', type=int, default=0)
  parser.add_argument('--seq_len', type=int, default=0)
  args = parser.parse_args(argv)
  config, used = default_medium(), 'default_medium'
  if args.config:
    try:
      config, used = config_file.load(args.config)[1], args.config
    except config_lib.ConfigError as e:   # e.g. the experiment has no medium mode yet
      if 'unknown mode' not in str(e):
        raise
      print(f'[medium_on_device] {args.config}: {e}; using default_medium')
  with tempfile.TemporaryDirectory() as tmp:
    probe = shrunk(config, args, 'unused')
    tokens = (args.steps + 4) * probe.data.batch_size * (probe.data.seq_len + 1) * 1.05
    token_file = str(pathlib.Path(tmp) / 'tokens.npy')
    write_tokens(pathlib.Path(token_file), probe.model.vocab_size, int(tokens))
    cfg = shrunk(config, args, token_file)
    t0 = time.perf_counter()
    out = loop.train_and_evaluate(cfg, pathlib.Path(tmp) / 'run', devices=jax.devices()[:1])
    wall = time.perf_counter() - t0
    device = jax.devices()[0]
    stats = device.memory_stats() or {}
    compiled = plan.compiled_memory(cfg)
  m = out.metrics
  record = {
      'device': device.device_kind, 'platform': device.platform,
      'jax': jax.__version__, 'backend': jax.default_backend(), 'config': used,
      'model': {'d_model': cfg.model.d_model, 'n_layers': cfg.model.n_layers,
                'vocab_size': cfg.model.vocab_size, 'dtype': cfg.model.dtype,
                'scan_layers': cfg.model.scan_layers, 'remat': cfg.model.remat},
      'seq_len': cfg.data.seq_len, 'batch': cfg.data.batch_size, 'steps': cfg.train.steps,
      'wall_s': wall,
      **{k: m.get(k) for k in ('params', 'flops_per_token', 'tokens_per_s', 'mfu',
                               'mfu_measured', 'step_s', 'data_wait_s', 'compute_s',
                               'goodput', 'train_loss')},
      'peak_bytes_in_use': stats.get('peak_bytes_in_use'),
      'bytes_limit': stats.get('bytes_limit'),
      'compiled_memory': compiled,
  }
  pathlib.Path(args.out).write_text(json.dumps(record, indent=1, default=float))
  print(json.dumps(record, indent=1, default=float))
  return record


if __name__ == '__main__':
  main()

"""`import_hf(src, out)`: a Hugging Face checkpoint -> a lattice run directory.

The run is what `lattice.train.artifacts.load_run`, `lattice serve` and
`train.init_from` read: `config.json` (the resolved lattice Config) and
`checkpoints/0/` (an Orbax train state: the imported params, zero optimizer moments,
step 0, and for DeepSeek-V3-style routers the correction bias in `extra`). The
model's tokenizer files are copied to `tokenizer/` and the run's `data.tokenizer`
points at them (`hf:RUN/tokenizer`, or `sentencepiece:RUN/tokenizer/tokenizer.model`
when there is no tokenizer.json; an absolute path), so `lattice serve`, `lattice
sample` and `train.init_from=RUN` use the model's own tokenizer. The conversion's
provenance goes to `convert.json`.

Streaming: tensors are read, transformed and written one at a time
(`state_writer`), so the conversion's peak memory is a few tensors, not the model
(`python -m benchmarks.convert_memory` measures it). Sharding happens at restore:
Orbax reads each device's slice.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
from pathlib import Path

import jax

from lattice import config as config_lib
from lattice.convert import hf_config, names, state_writer
from lattice.convert.hf_config import ConvertError
from lattice.convert.safetensors_reader import HFCheckpoint

PROVENANCE = 'convert.json'
TOKENIZER_DIR = 'tokenizer'


def check_tensors(ckpt: HFCheckpoint, plan: names.Plan, family: str) -> None:
  """Every tensor the plan needs is in the checkpoint and every tensor there is used;
  else ConvertError naming the first that is not."""
  needed = {n for hf_names, _ in plan.values() for n in hf_names}
  for name in sorted(needed):
    if name not in ckpt:
      raise ConvertError(f'missing tensor {name} in {ckpt.directory} (needed for the '
                         f'{family} layout)')
  tied_head = {'lm_head.weight'} if ('params', 'unembed', 'kernel') not in plan else set()
  unused = [n for n in ckpt.names() if n not in needed and n not in tied_head
            and not n.endswith(names.IGNORED_SUFFIXES)]
  if unused:
    raise ConvertError(f'tensor {unused[0]} in {ckpt.directory} has no place in '
                       f'lattice\'s {family} model ({len(unused)} such tensors)')


def import_hf(src: str | os.PathLike[str], out: str | os.PathLike[str], *,
              max_len: int | None = None, param_dtype: str | None = None,
              overwrite: bool = False) -> config_lib.Config:
  """Converts the HF checkpoint directory `src` into the lattice run `out`.

  `max_len` caps the context (default: the checkpoint's, at most 4096, since the
  KV cache is allocated at max_len); `param_dtype` is 'float32' or 'bfloat16'
  (default: bfloat16 if the checkpoint is, else float32). Returns the run's Config.
  Raises ConvertError (one line, naming the field or tensor) for an architecture,
  setting or tensor lattice cannot represent, and FileExistsError if `out` holds a
  run and not `overwrite`.
  """
  from lattice.train import artifacts, checkpoint, loop  # pylint: disable=g-import-not-at-top
  ckpt = HFCheckpoint(src)
  hf = ckpt.config
  if param_dtype is None:
    param_dtype = 'bfloat16' if hf.get('torch_dtype', hf.get('dtype')) == 'bfloat16' \
        else 'float32'
  model = hf_config.model_config(hf, max_len=max_len, param_dtype=param_dtype)
  family = hf_config.family(hf)
  plan = names.plan(model, family)
  check_tensors(ckpt, plan, family)

  out = Path(out)
  if (out / artifacts.CONFIG_FILE).exists() or (out / 'checkpoints').exists():
    if not overwrite:
      raise FileExistsError(f'--out: {out} already holds a lattice run (pass '
                            f'--overwrite to replace it)')
    shutil.rmtree(out / 'checkpoints', ignore_errors=True)
    shutil.rmtree(out / TOKENIZER_DIR, ignore_errors=True)
  out.mkdir(parents=True, exist_ok=True)
  cfg = dataclasses.replace(config_lib.Config(), model=model)
  cfg = config_lib.replace(cfg, **{'data.seq_len': min(cfg.data.seq_len, model.max_len)})
  setup = loop.build(cfg, devices=jax.devices()[:1])
  target = str((out / 'checkpoints' / '0').absolute())

  state_writer.write_state(target, setup.abstract_state, plan, ckpt.get, family)
  checkpoint.write_manifest(target)

  tokenizer_dir = out / TOKENIZER_DIR
  files = ckpt.tokenizer_files()
  if files:
    tokenizer_dir.mkdir(exist_ok=True)
    for f in files:
      shutil.copy2(f, tokenizer_dir / f.name)
  # After the tensors: loading a large vocabulary does not add to the peak.
  spec, note = attach_tokenizer(tokenizer_dir, [f.name for f in files], model.vocab_size)
  cfg = config_lib.replace(setup.cfg, **{'data.tokenizer': spec}) if spec else setup.cfg
  artifacts.save_config(out, cfg)
  if note:
    print(f'[lattice] warning: {note}', file=sys.stderr)
  (out / PROVENANCE).write_text(json.dumps({
      'source': str(Path(src).absolute()), 'architecture': hf['architectures'][0],
      'family': family, 'hf_config': hf,
      'tokenizer': spec or None, 'tokenizer_files': [f.name for f in files],
      'tokenizer_note': note}, indent=1))
  return cfg


def attach_tokenizer(directory: Path, files: list[str], vocab_size: int
                     ) -> tuple[str, str | None]:
  """(the run's `data.tokenizer` spec for the copied tokenizer files, a note why there
  is none). `hf:DIR` when `tokenizer.json` was copied, else `sentencepiece:FILE` for
  `tokenizer.model`; the spec is checked to load and to fit the model's vocabulary,
  else ('', the reason) and the run keeps the byte tokenizer."""
  from lattice.data import tokenizer as tokenizer_lib  # pylint: disable=g-import-not-at-top
  directory = directory.absolute()
  if 'tokenizer.json' in files:
    spec = f'hf:{directory}'
  elif 'tokenizer.model' in files:
    spec = f'sentencepiece:{directory / "tokenizer.model"}'
  else:
    return '', ('the checkpoint has no tokenizer.json or tokenizer.model; the run '
                'keeps data.tokenizer=byte (set it to the model\'s own)')
  try:
    tok = tokenizer_lib.make_tokenizer(spec)
  except Exception as e:  # noqa: BLE001  (tokenizer libraries raise many kinds)
    return '', (f'data.tokenizer: {spec} does not load ({type(e).__name__}: '
                f'{str(e)[:200]}); the run keeps data.tokenizer=byte')
  if tok.vocab_size > vocab_size:
    return '', (f'data.tokenizer: {spec} has {tok.vocab_size} tokens, more than the '
                f'model\'s vocab_size {vocab_size}; the run keeps data.tokenizer=byte')
  return spec, None

"""README "Training on your own data": every `lattice run` command parses as written,
builds its config and reads a first training batch from the files it names.

The commands' `...` stands for the first command's `--config=... --workdir=...`.
Each runs in a folder where the test wrote the local files the command names
(tiny corpora of each kind); `gs://` commands are covered by remote_data_test.py,
and training itself by the experiments' smoke tests, so nothing trains here.
"""

import json
import pathlib
import re
import shlex

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lattice import config as config_lib
from lattice import parser as parser_lib
from lattice.data import pipeline
from lattice.data import tokenizer as tokenizer_lib
from lattice.run import config_file

README = pathlib.Path(__file__).resolve().parent.parent / 'README.md'


def _commands() -> list[str]:
  text = README.read_text()
  section = text[text.index('## Training on your own data'):]
  section = section[:section.index('\n## ', 1)]
  block = re.search(r'```bash\n(.*?)```', section, re.S).group(1)
  lines = ' '.join(l.strip() for l in block.replace('\\\n', ' ').splitlines()
                   if l.strip() and not l.lstrip().startswith('#')).split('lattice run ')
  commands = [c.strip() for c in lines if c.strip()]
  first = shlex.split(commands[0])
  prefix = ' '.join(a for a in first if a.startswith(('--config=', '--workdir=')))
  return [c.replace('...', prefix, 1) for c in commands]


def test_the_section_lists_every_local_source_kind():
  kinds = {re.search(r'--config\.data\.source=(\w+)', c).group(1) for c in _commands()}
  assert {'text', 'jsonl', 'parquet', 'hf', 'tokens'} <= kinds


def _write_files(folder: pathlib.Path) -> None:
  (folder / 'corpus').mkdir()
  for i in range(4):
    (folder / 'corpus' / f'd{i}.txt').write_text(f'document {i}\n' * 50)
  rows = ''.join(json.dumps({'text': f'record {i} ' * 20}) + '\n' for i in range(20))
  for name in ('data.jsonl', 'a.jsonl', 'b.jsonl'):
    (folder / name).write_text(rows)
  (folder / 'shards').mkdir()
  pq.write_table(pa.table({'text': [f'row {i} ' * 20 for i in range(20)]}),
                 folder / 'shards' / 'p0.parquet')
  (np.arange(5000) % 250).astype(np.uint16).tofile(folder / 'corpus.bin')


@pytest.mark.parametrize('command', [c for c in _commands() if 'gs://' not in c])
def test_command_builds_and_reads_a_batch(command, tmp_path, monkeypatch):
  pytest.importorskip('datasets')
  _write_files(tmp_path)
  monkeypatch.chdir(tmp_path)
  rest, overrides = parser_lib.split_overrides(['run', *shlex.split(command)])
  args = parser_lib.parser().parse_args(rest)
  _, config = config_file.load(str(README.parent / args.config.split(':')[0]) + ':'
                               + args.config.split(':')[1])
  config_file.apply(config, overrides)
  cfg = config_lib.build(config)
  assert args.workdir
  tok = tokenizer_lib.make_tokenizer(cfg.data.tokenizer)
  data = config_lib.replace(cfg, **{'data.batch_size': 2}).data
  batch = next(pipeline.make_train_iterator(data, tok, seed=0, process_index=0,
                                            process_count=1))
  assert batch['inputs'].shape == (2, cfg.data.seq_len)
  assert batch['weights'].sum() > 0

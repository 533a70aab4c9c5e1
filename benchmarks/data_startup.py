r"""What opening a corpus reads before step 1: bytes read and seconds, cold and warm.

  python -m benchmarks.data_startup [--mb 64] [--json out.json]

Writes a JSONL corpus and a folder of text files of `--mb` MiB each into a temporary
folder, then, for each, opens the training and validation splits (what a host does
at startup: `lattice.data.sources.get_source` and `len`) twice in fresh processes
with one empty index cache (`$LATTICE_DATA_CACHE`): the first start ("cold") and a
later start or another host sharing the cache ("warm"). Bytes read are the process's
`rchar` from /proc/self/io (Linux), counted around the open only, after imports.

The issue measured the JSONL open at 87 MB/s on every host, every start (~20 min per
100 GB). Bytes are exact; the seconds are only meaningful on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

_CHILD = r'''
import json, sys, time
from lattice import config as config_lib
from lattice.data import sources
def rchar():
  with open('/proc/self/io') as f:
    return next(int(l.split()[1]) for l in f if l.startswith('rchar'))
cfg = config_lib.build({'data': json.loads(sys.argv[1])}).data
sources.get_source(config_lib.build({'data': {'source': 'text', 'paths': sys.argv[2]}}).data,
                   'train')    # warm the imports and lazy modules on a tiny corpus
r0, t0 = rchar(), time.perf_counter()
n = sum(len(sources.get_source(cfg, split)) for split in sources.SPLITS)
print(json.dumps({'bytes_read': rchar() - r0, 'seconds': time.perf_counter() - t0,
                  'documents': n}))
'''


def write_corpora(folder: str, mib: float) -> dict[str, dict[str, str]]:
  """A JSONL corpus (~500-byte records) and a folder of ~20 KiB text files, each of
  `mib` MiB; returns their data configs (plus a tiny one for warming imports)."""
  target = int(mib * 2**20)
  line = json.dumps({'text': 'x' * 480, 'id': 0}) + '\n'
  os.makedirs(os.path.join(folder, 'jsonl'), exist_ok=True)
  per_file = max(target // 4 // len(line), 1)
  for f in range(4):
    with open(os.path.join(folder, 'jsonl', f'part{f}.jsonl'), 'w') as fh:
      fh.write(line * per_file)
  os.makedirs(os.path.join(folder, 'text'), exist_ok=True)
  doc = ('def f(x):\n    return x + 1\n' * 700)[:20_000]
  for i in range(max(target // len(doc), 1)):
    with open(os.path.join(folder, 'text', f'd{i:05d}.txt'), 'w') as fh:
      fh.write(doc)
  with open(os.path.join(folder, 'tiny.txt'), 'w') as fh:
    fh.write('tiny\n')
  return {'jsonl': {'source': 'jsonl', 'paths': os.path.join(folder, 'jsonl')},
          'text': {'source': 'text', 'paths': os.path.join(folder, 'text')}}


def open_in_fresh_process(data: dict[str, str], tiny: str, cache: str) -> dict:
  """{'bytes_read', 'seconds', 'documents'} of one start in a new Python process."""
  env = {**os.environ, 'LATTICE_DATA_CACHE': cache, 'JAX_PLATFORMS': 'cpu'}
  out = subprocess.run([sys.executable, '-c', _CHILD, json.dumps(data), tiny],
                       env=env, capture_output=True, text=True, check=True)
  return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--mb', type=float, default=64)
  parser.add_argument('--json', default='')
  args = parser.parse_args(argv)
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    configs = write_corpora(tmp, args.mb)
    for kind, data in configs.items():
      cache = os.path.join(tmp, f'cache_{kind}')
      size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(data['paths'])
                 for f in fs)
      for start in ('cold', 'warm'):
        row = open_in_fresh_process(data, os.path.join(tmp, 'tiny.txt'), cache)
        row.update(source=kind, start=start, corpus_bytes=size,
                   read_fraction=row['bytes_read'] / size)
        rows.append(row)
        print(f"{kind:5s} {start}: read {row['bytes_read'] / 2**20:8.2f} MiB of "
              f"{size / 2**20:.1f} MiB ({row['read_fraction']:.1%}) in "
              f"{row['seconds']:.2f} s, {row['documents']} documents")
  result = {'mib': args.mb, 'rows': rows}
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(result, f, indent=1)
  return result


if __name__ == '__main__':
  main()

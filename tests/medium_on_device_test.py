"""scripts/medium_on_device.py (device_check.sh's `medium` section) runs end to end
on CPU at a tiny width: a medium mode's vocabulary, scan and remat on a local token
file, and it records tokens/s, MFU and compiled memory. The GPU numbers come from
device_check.sh on a lent machine."""

import importlib.util
import json
import pathlib
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _script():
  spec = importlib.util.spec_from_file_location(
      'medium_on_device', ROOT / 'scripts' / 'medium_on_device.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_device_check_is_valid_bash_with_a_medium_section():
  subprocess.run(['bash', '-n', str(ROOT / 'scripts' / 'device_check.sh')], check=True)
  assert 'scripts/medium_on_device.py' in (ROOT / 'scripts' / 'device_check.sh').read_text()


def test_a_shrunk_medium_run_records_throughput_mfu_and_memory(tmp_path):
  out = tmp_path / 'medium.json'
  rec = _script().main(['--config', 'experiments/baseline_lm.py:medium', '--steps', '3',
                        '--n_layers', '1', '--d_model', '32', '--batch', '2',
                        '--seq_len', '16', '--out', str(out)])
  assert json.loads(out.read_text()) == json.loads(json.dumps(rec, default=float))
  assert rec['steps'] == 3 and rec['model']['d_model'] == 32
  assert rec['model']['vocab_size'] >= 32_000          # a subword vocabulary
  assert rec['model']['scan_layers'] and rec['model']['dtype'] == 'auto'
  assert rec['tokens_per_s'] > 0 and 0 < rec['mfu'] < 1
  assert rec['compiled_memory']['temp_size_in_bytes'] > 0
  # the token file's ids span the vocabulary: the embedding is the mode's
  ids = tmp_path / 'ids.npy'
  _script().write_tokens(ids, 50_304, 10_000)
  import numpy as np  # pylint: disable=g-import-not-at-top
  a = np.load(ids)
  assert a.dtype == np.uint16 and a.min() >= 3 and a.max() < 50_304 and a.max() > 1000

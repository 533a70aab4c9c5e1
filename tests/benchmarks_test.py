"""Smoke tests: the benchmarks run end to end at tiny sizes and write their JSON."""

import json
import math

from benchmarks import machine, moe_layer, train_throughput


def _positive_finite(v):
  return isinstance(v, (int, float)) and math.isfinite(v) and v > 0


def test_moe_layer_benchmark_writes_its_ratios(tmp_path):
  out = tmp_path / 'moe.json'
  moe_layer.main(['--d_model', '32', '--batch', '4', '--seq_len', '16', '--experts', '4',
                  '--ragged_experts', '', '--expert_d_ff', '16', '--repeats', '2',
                  '--json', str(out)])
  result = json.loads(out.read_text())
  for key in ('dropless_over_dense', 'grouped_over_dense', 'blocks_over_dense',
              'capacity_over_dense', 'dropless_over_dense_2d'):
    assert _positive_finite(result[key]), (key, result[key])
  want = {'dense', 'dense_2d', 'grouped', 'blocks', 'capacity'}
  if result['moe_gemm']:  # the fused kernel ran: its products on the other codes too
    others = {f'grouped_{kind}' for kind in ('openblas', 'avx2') if kind != result['moe_gemm']}
    assert {r['variant'] for r in result['rows']} - want <= others
    assert 'grouped_openblas' in {r['variant'] for r in result['rows']} or (
        result['moe_gemm'] == 'openblas')
    for kind in ('openblas', 'avx2'):
      if f'grouped_{kind}' in {r['variant'] for r in result['rows']}:
        assert _positive_finite(result[f'grouped_{kind}_over_grouped'])
        want.add(f'grouped_{kind}')
  assert {r['variant'] for r in result['rows']} == want
  assert result['dropless_over_dense'] == result[f'{result["dropless_impl"]}_over_dense']
  for r in result['rows']:
    assert _positive_finite(r['ms']) and 0 <= r['drop_rate'] <= 1
  assert result['backend'] and result['device']
  _check_machine(result['machine'])


def _check_machine(m):
  # What the record says it ran on (benchmarks/machine.py): this process's CPUs, the
  # kernels' ISA flags as a list, the load at the start and the end.
  import os
  assert m['cores'] == len(os.sched_getaffinity(0))
  with open('/proc/cpuinfo') as f:
    flags = next((line.split(':', 1)[1].split() for line in f
                  if line.startswith(('flags', 'Features'))), [])
  assert m['isa'] == [f for f in machine._ISA_FLAGS if f in flags]
  assert m['load_average_start'] >= 0 and m['load_average_end'] >= 0


def test_machine_line_names_cpu_cores_isa_and_caches():
  m = {'cpu': 'Some CPU', 'cores': 2, 'isa': ['avx2', 'fma'], 'l2_kib': 2048,
       'l3_kib': None, 'load_average_start': 0.5}
  assert machine.line(m) == 'machine: Some CPU, 2 cores, avx2+fma, L2 2048 KiB, load 0.50'
  m.update(cpu=None, isa=[], l2_kib=None, load_average_start=None)
  assert machine.line(m) == 'machine: unknown cpu, 2 cores, no listed ISA flags'
  d = machine.describe()
  assert d['cores'] >= 1 and 'load_average_end' not in d
  assert machine.finish(d) is d and 'load_average_end' in d


def test_train_throughput_benchmark_writes_rows(tmp_path):
  out = tmp_path / 'throughput.json'
  train_throughput.main(['--sizes', '32', '--seq_len', '16', '--batch', '8', '--steps', '2',
                         '--json', str(out)])
  result = json.loads(out.read_text())
  row = result['rows'][0]
  for key in ('d_model', 'params', 'tokens_per_s', 'mfu'):
    assert _positive_finite(row[key]), (key, row[key])
  assert row['d_model'] == 32
  assert _positive_finite(result['matmul_peak_flops'])
  assert result['best_mfu'] == row['mfu'] and result['attention'] == 'auto'
  _check_machine(result['machine'])
  # No MaxText row is ever invented: the field says it did not run, and why.
  assert result['maxtext']['ran'] is False and result['maxtext']['reason']


def test_ternary_decode_benchmark_writes_its_ratios(tmp_path):
  from benchmarks import ternary_decode
  out = tmp_path / 'ternary.json'
  ternary_decode.main(['--d_model', '64', '--layers', '1', '--new_tokens', '3',
                       '--repeats', '1', '--matvec_reps', '2', '--json', str(out)])
  result = json.loads(out.read_text())
  assert set(result['matvec']['us']) >= {'packed', 'bf16', 'float32'}
  assert _positive_finite(result['matvec']['packed_over_bf16'])
  for key in ('bf16_over_packed_2bit', 'bf16_over_packed_base3', 'decode_speedup'):
    assert _positive_finite(result[key]), (key, result[key])
  assert result['bf16_over_packed_2bit'] > 7.5 and result['bf16_over_packed_base3'] > 9.0
  assert result['packed_equals_fake_quant'] is True
  assert result['backend']
  assert result['kernel_path'] in ('pallas-gemv', 'pallas', 'native-avx512', 'native-avx2', 'xla-unpack')


def test_accumulation_benchmark_writes_its_ratios(tmp_path):
  from benchmarks import accumulation  # pylint: disable=g-import-not-at-top
  out = tmp_path / 'accumulation.json'
  accumulation.main(['--microbatches', '1,4', '--d_model', '32', '--seq_len', '16',
                     '--batch', '8', '--steps', '1', '--json', str(out)])
  result = json.loads(out.read_text())
  assert [r['microbatches'] for r in result['rows']] == [1, 4]
  assert _positive_finite(result['time_ratio'])
  if result['temp_ratio'] is not None:  # the CPU backend reports memory_analysis()
    assert 0 < result['temp_ratio'] < 1
  for r in result['rows']:
    assert _positive_finite(r['tokens_per_s']) and _positive_finite(r['mfu_measured'])

"""Execution-based code eval: pass@k estimator, sandboxed runs, HumanEval/MBPP files."""

import json
import math

import pytest

from lattice.eval import code


def test_pass_at_k_matches_the_combinatorial_definition():
  for n, c, k in [(10, 3, 1), (10, 3, 5), (20, 0, 1), (5, 5, 2), (7, 2, 6)]:
    want = 1.0 - math.comb(n - c, k) / math.comb(n, k)
    assert code.pass_at_k(n, c, k) == pytest.approx(want, abs=1e-12)
  assert code.pass_at_k(10, 3, 1) == pytest.approx(0.3)
  with pytest.raises(ValueError):
    code.pass_at_k(3, 4, 1)


@pytest.fixture
def problems(tmp_path):
  humaneval = tmp_path / 'he.jsonl'
  humaneval.write_text(json.dumps({
      'task_id': 'HE/0', 'prompt': 'def add(a, b):\n    """a + b"""\n',
      'canonical_solution': '    return a + b\n', 'entry_point': 'add',
      'test': 'def check(f):\n    assert f(2, 3) == 5\n    assert f(-1, 1) == 0\n'}) + '\n')
  mbpp = tmp_path / 'mbpp.jsonl'
  mbpp.write_text(json.dumps({'task_id': 7, 'text': 'Square a number.',
                              'test_list': ['assert sq(3) == 9', 'assert sq(0) == 0']}) + '\n')
  return code.load_problems(str(humaneval)) + code.load_problems(str(mbpp))


def test_pass_at_k_over_problems(problems):
  completions = {
      'HE/0': ['    return a + b\n', '    return a - b\n', '    while True: pass\n',
               '    return undefined\n'],
      '7': ['def sq(x):\n    return x * x\n'] * 2 + ['def sq(x):\n    return x + x\n'] * 2,
  }
  out = code.evaluate(problems, completions, ks=(1, 2), timeout_s=2.0)
  statuses = {o['status'].split(':')[0] for o in out['outcomes']}
  assert {'passed', 'error', 'timeout'} <= statuses
  assert out['pass@1'] == pytest.approx((0.25 + 0.5) / 2)
  assert out['pass@2'] == pytest.approx((code.pass_at_k(4, 1, 2) + code.pass_at_k(4, 2, 2)) / 2)
  assert out['samples_per_problem'] == 4


def test_sandbox_blocks_network_and_limits_memory():
  ok, status = code.run_program(
      'import socket\ns = socket.create_connection(("127.0.0.1", 9), timeout=1)\n', 5.0)
  assert not ok and status.startswith('error:'), status
  ok, status = code.run_program('x = bytearray(4 << 30)\n', 5.0)   # over 1 GiB
  assert not ok and 'MemoryError' in status
  assert code.sandbox_kind() in ('netns', 'socket-guard')


def test_bad_problem_file(tmp_path):
  bad = tmp_path / 'bad.jsonl'
  bad.write_text('{"task_id": 1, "question": "?"}\n')
  with pytest.raises(ValueError, match='bad.jsonl:1'):
    code.load_problems(str(bad))

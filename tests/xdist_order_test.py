"""The xdist workers take the longest test files first (tests/xdist_order.py)."""

import pathlib
import types

import pytest

import xdist_order  # tests/ is on sys.path

TESTS = pathlib.Path(__file__).parent


def test_every_listed_file_exists():
  missing = [name for name in xdist_order.COST_S if not (TESTS / name).is_file()]
  assert not missing, f'xdist_order.COST_S names files that are gone: {missing}'


def test_listed_files_go_first_longest_first_then_the_rest_by_count(monkeypatch):
  monkeypatch.setattr(xdist_order, 'COST_S', {'slow_test.py': 80.0, 'mid_test.py': 30.0})
  units = {'tests/many_test.py': dict.fromkeys(range(40)),
           'tests/mid_test.py': dict.fromkeys(range(9)),
           'tests/few_test.py': dict.fromkeys(range(2)),
           'tests/slow_test.py': dict.fromkeys(range(1)),
           'tests/some_test.py': dict.fromkeys(range(2))}
  assert [f for f, _ in xdist_order.longest_first(units)] == [
      'tests/slow_test.py', 'tests/mid_test.py', 'tests/many_test.py',
      'tests/few_test.py', 'tests/some_test.py']


class _Node:
  """A stand-in for xdist's WorkerController: records what it is sent."""

  def __init__(self, name):
    self.sent, self.shutting_down = [], False
    self.gateway = types.SimpleNamespace(id=name)

  def send_runtest_some(self, indices):
    self.sent.extend(indices)

  def shutdown(self):
    self.shutting_down = True


def test_the_scheduler_hands_out_the_longest_file_first(monkeypatch):
  pytest.importorskip('xdist')
  monkeypatch.setattr(xdist_order, 'COST_S', {'slow_test.py': 80.0})
  config = types.SimpleNamespace(getoption={'dist': 'loadfile'}.get,
                                 getvalue={'tx': ['2*popen']}.get,
                                 option=types.SimpleNamespace(loadscopereorder=True))
  sched = xdist_order.pytest_xdist_make_scheduler(config, None)
  collection = [*(f'tests/many_test.py::t{i}' for i in range(6)),
                'tests/slow_test.py::t', 'tests/few_test.py::t']
  nodes = [_Node('gw0'), _Node('gw1')]
  for node in nodes:
    sched.add_node(node)
    sched.add_node_collection(node, collection)
  sched.schedule()
  first = collection[nodes[0].sent[0]]
  assert first == 'tests/slow_test.py::t', nodes[0].sent
  assert collection[nodes[1].sent[0]].startswith('tests/many_test.py::')
  # Any other --dist mode keeps xdist's own scheduler.
  config.getoption = {'dist': 'load'}.get
  assert xdist_order.pytest_xdist_make_scheduler(config, None) is None

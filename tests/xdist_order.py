"""The order in which the two pytest-xdist workers take test files: longest first.

pytest.ini runs `-n 2 --dist loadfile`: each worker takes whole files, one at a time,
from one queue. xdist orders that queue by number of tests, so a file with one long
test (gcs_sequence_test: 1 test, ~80 s) came last, and one worker ran it alone while
the other had finished. Longest-processing-time-first (Graham 1969, "Bounds on
multiprocessing timing anomalies", SIAM J. Appl. Math. 17(2)) ends the two workers at
most one short file apart: the heavy files go first, and the many short files fill
the gaps at the end.

`COST_S` holds the measured files: CPU seconds of the whole file on the loaded 2-core
build machine (`pytest -n 0` with a per-test CPU-time plugin; CPU time, not wall
time, because the machine was shared), rounded. Only the order matters, so the
numbers need not be exact. A file not listed counts `UNLISTED_S_PER_TEST` per test
(the unmeasured files are mostly the many-test unit-test files), so among those,
more tests go first, as in xdist's own order. The files not listed that have 1-10
tests were measured at under 4 s each, so the queue ends with them; only
constrained_compare_test and grouped_matmul_test (6 and 9 tests) were not measured.
Re-measure and update the table when a file's cost changes by tens of seconds
(tests/xdist_order_test.py checks that every listed file exists).
"""

from __future__ import annotations

import pytest

COST_S = {
    'experiments_test.py': 400, 'model_test.py': 180, 'scale_modes_test.py': 79,
    'sweep_test.py': 77, 'mtp_test.py': 55, 'speculative_test.py': 51,
    'quant_inference_test.py': 51, 'moe_test.py': 51, 'step_test.py': 47,
    'benchmarks_test.py': 43, 'distributed_test.py': 41, 'train_test.py': 37,
    'readme_test.py': 37, 'preemption_test.py': 33, 'harness_test.py': 29,
    'survive_test.py': 27, 'gcs_sequence_test.py': 24, 'remote_workdir_test.py': 24,
    'transformer_test.py': 22, 'nanoquant_test.py': 21, 'multimodal_test.py': 20,
    'einsum_attention_test.py': 20, 'embedding_sharding_test.py': 19,
    'document_mask_test.py': 19, 'faults_test.py': 18, 'sample_test.py': 15,
    'convert_bitnet_test.py': 14, 'sharding_test.py': 12, 'nanoquant_import_test.py': 12,
    'model_eval_test.py': 12, 'medium_on_device_test.py': 12,
    'adding_a_technique_test.py': 12, 'agents_test.py': 11, 'serve_subword_test.py': 10,
    'observe_test.py': 10, 'lm_experiment_test.py': 10, 'synth_select_test.py': 9,
    'calls_subword_test.py': 8, 'modality_router_test.py': 5, 'contraction_test.py': 5,
    'checkpoint_test.py': 5,
}
UNLISTED_S_PER_TEST = 0.5


def cost_s(path: str, n_tests: int) -> float:
  """Estimated seconds of one test file (`tests/x_test.py`) with `n_tests` tests."""
  return COST_S.get(path.rsplit('/', 1)[-1], UNLISTED_S_PER_TEST * n_tests)


def longest_first(units: dict[str, dict]) -> list[tuple[str, dict]]:
  """xdist's work units ({file: {nodeid: done}}) sorted by `cost_s`, longest first;
  ties keep their order (xdist's: most tests first)."""
  return sorted(units.items(), key=lambda kv: -cost_s(kv[0], len(kv[1])))


@pytest.hookimpl(optionalhook=True)   # a hook of xdist's: absent without it
def pytest_xdist_make_scheduler(config, log):
  """xdist's LoadFileScheduling with its queue in `longest_first` order.

  Only for `--dist loadfile`; any other mode keeps xdist's own scheduler (None).
  """
  if config.getoption('dist') != 'loadfile':
    return None
  from xdist.scheduler import LoadFileScheduling  # pylint: disable=g-import-not-at-top

  class LongestFileFirst(LoadFileScheduling):
    """Sorts the work queue once, before the first file is handed out."""

    def _assign_work_unit(self, node):
      if not getattr(self, '_sorted', False):
        units = longest_first(self.workqueue)
        self.workqueue.clear()
        self.workqueue.update(units)
        self._sorted = True
      super()._assign_work_unit(node)

  return LongestFileFirst(config, log)

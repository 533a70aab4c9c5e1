"""Pre-registered paired checks (lattice.run.checks) on hand-made numbers."""

import math

import pytest

from lattice.run import checks, records

T_2 = 4.302652729749464  # Student t, 2 degrees of freedom, 0.975 quantile


def _arm(name, values, seeds=(0, 1, 2)):
  return records.Arm(name=name, overrides={}, metrics={'val_loss': {
      'mean': sum(values) / len(values), 'std': 0.0, 'n': len(values),
      'values': list(values)}}, params=1, active_params=1, train_flops=1.0, tokens=1,
      wall_s=0.0, seeds=list(seeds))


def test_known_t_interval():
  ci = checks.paired_ci([3.0, 5.0, 7.0], [2.0, 3.0, 4.0])  # differences 1, 2, 3
  half = T_2 * 1.0 / math.sqrt(3)
  assert ci['diff'] == pytest.approx(2.0)
  assert ci['lo'] == pytest.approx(2.0 - half) and ci['hi'] == pytest.approx(2.0 + half)
  assert ci['n'] == 3 and ci['per_seed'] == pytest.approx([1.0, 2.0, 3.0])


def test_relative_differences():
  ci = checks.paired_ci([1.1, 2.2], [1.0, 2.0], relative=True)
  assert ci['per_seed'] == pytest.approx([0.1, 0.1])


def test_better_needs_ci_below_zero():
  a, b = _arm('a', [1.0, 2.0, 3.0]), _arm('b', [2.0, 3.0, 4.0])  # a - b = -1 each
  assert checks.judge(checks.better('a', 'b'), [a, b]).passed
  # Differences -3, +1, -1: mean -1 but the interval spans zero.
  spans = _arm('c', [-1.0, 4.0, 3.0])
  check = checks.judge(checks.better('c', 'b'), [spans, b])
  assert not check.passed and '95% CI' in check.detail and 'below 0' in check.detail
  # Higher is better: a - b must be above zero.
  assert checks.judge(checks.better('b', 'a', higher_is_better=True), [a, b]).passed
  assert not checks.judge(checks.better('a', 'b', higher_is_better=True), [a, b]).passed


def test_non_inferiority_at_the_margin():
  a, b = _arm('a', [1.0, 1.1, 1.2]), _arm('b', [1.0, 1.0, 1.0])  # diffs 0, .1, .2
  hi = 0.1 + T_2 * 0.1 / math.sqrt(3)
  assert checks.judge(checks.not_worse('a', 'b', margin=hi + 1e-6), [a, b]).passed
  assert not checks.judge(checks.not_worse('a', 'b', margin=hi - 1e-6), [a, b]).passed
  detail = checks.judge(checks.not_worse('a', 'b', margin=0.35), [a, b]).detail
  assert 'margin +0.35' in detail and 'upper bound < +0.35' in detail


def test_a_failed_check_says_why_from_its_numbers():
  from lattice.run import stats
  b = _arm('b', [2.0, 3.0, 4.0])
  # Differences -3, +1, -1: mean -1 on the passing side, sd 2, interval too wide.
  detail = checks.judge(checks.better('c', 'b'), [_arm('c', [-1.0, 4.0, 3.0]), b]).detail
  n80 = stats.seeds_needed(-1.0, 2.0, 0.0, below=True, power=0.8)
  assert n80 == 34 and f'about {n80} paired seeds would pass' in detail
  # The rule: n80 is the first n >= 3 whose (t_.975 + t_.80) sd / sqrt(n) < 1.
  z = lambda n: stats.t_quantile(0.975, n - 1) + stats.t_quantile(0.8, n - 1)
  assert z(n80) * 2.0 / math.sqrt(n80) < 1.0 <= z(n80 - 1) * 2.0 / math.sqrt(n80 - 1)
  # Differences +1, +2, +3: the mean is on the failing side; seeds cannot help.
  wrong = checks.judge(checks.better('w', 'b'), [_arm('w', [3.0, 5.0, 7.0]), b]).detail
  assert 'on the failing side of +0' in wrong and 'more seeds would not' in wrong
  # Non-inferiority, higher is better: the bound is -margin.
  ni = checks.judge(checks.not_worse('c', 'b', margin=0.5, higher_is_better=True),
                    [_arm('c', [2.5, 2.0, 4.5]), b]).detail  # diffs +0.5, -1, +0.5
  assert 'passing side of -0.5' in ni
  assert 'why' not in checks.judge(checks.better('b', 'c', higher_is_better=False),
                                   [_arm('c', [5.0, 6.0, 7.0]), b]).detail  # passed


def test_too_few_seeds_fail_and_say_so():
  a, b = _arm('a', [1.0, 1.5], (0, 1)), _arm('b', [2.0, 2.4], (0, 1))
  check = checks.judge(checks.better('a', 'b'), [a, b])
  assert not check.passed and '3 needed' in check.detail
  one = checks.judge(checks.better('a', 'b'), [_arm('a', [1.0], (0,)), _arm('b', [2.0], (0,))])
  assert not one.passed and 'no CI' in one.detail


def test_arms_with_more_seeds_pair_on_the_common_ones():
  # a ran seeds 0-4, b ran 0-2: the check pairs seeds 0, 1, 2 only (a's seeds 3 and 4
  # would flip it: differences -1, -1, -1 there, +9 and +9 past them).
  a = _arm('a', [1.0, 2.0, 3.0, 20.0, 20.0], (0, 1, 2, 3, 4))
  b = _arm('b', [2.0, 3.0, 4.0], (0, 1, 2))
  check = checks.judge(checks.better('a', 'b'), [a, b])
  assert check.passed and 'over 3 seeds (s0 -1, s1 -1, s2 -1)' in check.detail
  assert checks.ci_line('a', 'b', [a, b]).endswith('over 3 seeds')
  with pytest.raises(ValueError, match='common seeds'):
    checks.ci_line('a', 'b', [a, _arm('b', [2.0, 3.0, 4.0], (7, 8, 9))])


def test_unpaired_and_bad_inputs_raise():
  with pytest.raises(ValueError, match='common seeds'):
    checks.judge(checks.better('a', 'b'),
                 [_arm('a', [1.0, 2.0, 3.0]), _arm('b', [1.0, 2.0, 3.0], (4, 5, 6))])
  with pytest.raises(ValueError, match="no arm 'x'"):
    checks.judge(checks.better('x', 'b'), [_arm('b', [1.0, 2.0, 3.0])])
  with pytest.raises(ValueError, match='margin'):
    checks.not_worse('a', 'b', margin=-0.1)
  with pytest.raises(ValueError, match='kind'):
    checks.Comparison('best_of', 'a', 'b')


def test_ci_line_reports_without_verdict():
  a, b = _arm('a', [3.0, 5.0, 7.0]), _arm('b', [2.0, 3.0, 4.0])
  line = checks.ci_line('a', 'b', [a, b])
  assert line.startswith('val_loss a - b: +2, 95% CI [') and 'over 3 seeds' in line
  assert '+2.00%' not in line and '%' in checks.ci_line('a', 'b', [a, b], relative=True)


def test_table_md_shows_the_ci_and_margin():
  from lattice.run import tables  # pylint: disable=g-import-not-at-top
  a, b = _arm('a', [1.0, 1.1, 1.2]), _arm('b', [1.0, 1.0, 1.0])
  result = records.Result(
      experiment='x', paper={'title': 't', 'arxiv': '1'}, claim='c', mode='quick',
      arms=[a, b], checks=[checks.judge(checks.not_worse('a', 'b', margin=0.35), [a, b])],
      headline={}, plots=[], notes='', env={})
  text = tables.result_markdown(result)
  assert tables.PAIRED_NOTE in text
  assert '95% CI [-0.1484, +0.3484]' in text and 'margin +0.35' in text and '✓' in text


def test_proportion_above_chance():
  assert checks.proportion_above('acc', 30, 100, 0.1).passed  # CI ~[0.21, 0.40]
  check = checks.proportion_above('acc', 12, 100, 0.1)  # CI ~[0.06, 0.20] spans 0.1
  assert not check.passed and 'Clopper-Pearson 95% CI [0.06' in check.detail
  with pytest.raises(ValueError, match='successes'):
    checks.proportion_above('acc', 5, 4, 0.1)

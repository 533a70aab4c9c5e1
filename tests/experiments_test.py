"""Every experiment's smoke mode runs end to end and writes a valid result.json."""

import json
import pathlib

import pytest

from lattice import config as config_lib, experiment
from lattice.run import records

EXPERIMENTS = sorted(p for p in (pathlib.Path(__file__).parent.parent / 'experiments')
                     .glob('*.py') if p.name != '__init__.py')


@pytest.mark.parametrize('path', EXPERIMENTS, ids=lambda p: p.stem)
def test_smoke_writes_valid_result(path, tmp_path):
  module = experiment.load_experiment_module(str(path))
  config = module.get_config('smoke')
  result = module.run(config, str(tmp_path))
  data = json.loads((tmp_path / 'result.json').read_text())
  records.validate_result_json(data)
  assert data['experiment'] == result.experiment == path.stem
  assert data['mode'] == 'smoke' and data['checks']
  assert (tmp_path / 'table.md').exists()
  for plot in data['plots']:
    assert (tmp_path / plot).stat().st_size > 0
  for arm in data['arms']:
    assert arm['tokens'] > 0 and arm['params'] > 0 and arm['train_flops'] > 0


def test_modes_and_docstring():
  for path in EXPERIMENTS:
    module = experiment.load_experiment_module(str(path))
    doc = module.__doc__
    assert 'arXiv' in doc or 'arxiv' in doc, path
    # What the Result is built from (experiment.finish): module constants.
    assert module.NAME == path.stem and module.CLAIM.strip(), path
    assert module.PAPER['title'] and module.PAPER['arxiv'], path
    for mode in ('smoke', 'quick', 'full'):
      assert f':{mode}' in doc, (path, mode)
      assert module.get_config(mode).mode == mode


def test_quick_seed_counts_are_pre_registered():
  # docs/REPRODUCE_PLAN.md (issue #20): each quick mode's seed count is stated in the
  # docstring, chosen before the one-commit rerun; a change must update it there.
  root = pathlib.Path(__file__).parent.parent
  plan = (root / 'docs' / 'REPRODUCE_PLAN.md').read_text()
  reproduced = [p for p in EXPERIMENTS if (root / 'results' / p.stem / 'result.json').exists()]
  assert len(reproduced) == 14
  for path in reproduced:  # experiments/lm.py is a generic LM, not a reproduction
    module = experiment.load_experiment_module(str(path))
    assert 'Pre-registered seed count (2026-11-30' in module.__doc__, path
    assert f'| {path.stem} |' in plan, path


def test_baseline_lm_samples_stay_inside_the_training_window(tmp_path):
  root = pathlib.Path(__file__).parent.parent
  baseline = experiment.load_experiment_module(str(root / 'experiments' / 'baseline_lm.py'))
  for mode in ('smoke', 'quick', 'medium', 'full'):
    c = baseline.get_config(mode)
    assert c.eval.prompt_len + c.eval.new_tokens <= c.data.seq_len, mode
  c = baseline.get_config('smoke')  # seq_len 32, prompt 8
  c.eval.new_tokens = 25  # as `--config.eval.new_tokens=25` would: refused before training
  with pytest.raises(config_lib.ConfigError, match='exceed data.seq_len'):
    baseline.run(c, str(tmp_path))
  assert not any(tmp_path.iterdir())


def test_next_rerun_plan_matches_quick_configs():
  # docs/REPRODUCE_PLAN.md, "The plan for the next rerun": every seed count the plan
  # raises (bold, "-> **N**") is the largest per-arm seed count of that quick mode,
  # and the experiment's docstring registers it; baseline_lm's and mtp_gloeckle's
  # planned steps are their quick modes'.
  import re  # pylint: disable=g-import-not-at-top
  from lattice.run import arms as arms_lib  # pylint: disable=g-import-not-at-top
  root = pathlib.Path(__file__).parent.parent
  plan = (root / 'docs' / 'REPRODUCE_PLAN.md').read_text()
  section = plan.split('## The plan for the next rerun (registered 2026-12-01')[1]
  raised = {m.group(1): int(m.group(2)) for m in
            re.finditer(r'^\| (\w+) \|[^|]*-> \*\*(\d+)\*\*', section, re.M)}
  assert set(raised) == {'composition', 'deepseek_moe', 'quest'}, raised
  # Revised for the 1,200 s bound (2026-12-03): quest's pair 24 -> 10 seeds.
  bound = plan.split('## Time-bound changes for the next rerun (registered 2026-12-03')[1]
  assert raised['quest'] == 24
  raised['quest'] = int(re.search(r'^\| quest \| W4A4 pair \*\*24 -> (\d+)\*\*', bound,
                                  re.M).group(1))
  for name, n in raised.items():
    module = experiment.load_experiment_module(str(root / 'experiments' / f'{name}.py'))
    seeds = arms_lib.arm_seeds(module.get_config('quick'))
    assert max(len(s) for s in seeds.values()) == n, (name, seeds)
    assert all(s == list(range(len(s))) for s in seeds.values()), (name, seeds)
    assert 'Pre-registered seed count for the next rerun (2026-12-01' in module.__doc__
  # baseline_lm's redesign (2026-12-03): fewer steps, samples inside the window.
  redesign = plan.split('## baseline_lm: the redesign (registered 2026-12-03')[1]
  steps = int(re.search(r'\| baseline_lm \|[^|]*\|[^|]*steps 5,400 -> (\d),(\d+)\*\*',
                        redesign).expand(r'\1\2'))
  baseline = experiment.load_experiment_module(str(root / 'experiments' / 'baseline_lm.py'))
  quick = baseline.get_config('quick')
  assert quick.train.steps == steps == 4400
  assert quick.eval.prompt_len + quick.eval.new_tokens == quick.data.seq_len
  assert (quick.eval.samples, quick.train.eval_every) == (1024, 1100)
  quest = experiment.load_experiment_module(str(root / 'experiments' / 'quest.py'))
  assert 'revised for the 1,200 s bound\n(2026-12-03' in quest.__doc__
  assert {n: len(s) for n, s in arms_lib.arm_seeds(quest.get_config('quick')).items()
          if not n.startswith('W4A4')} == dict.fromkeys(
              ['float', 'W8A8', 'W3A3', 'W2A2', 'W1A1', 'W1A1_naive_ste'], 5)
  assert 'Redesign (registered 2026-12-03' in baseline.__doc__
  # mtp_gloeckle's redesign (2026-12-02): the same seeds, twice the steps.
  steps = int(re.search(r'\| mtp_gloeckle \|[^|]*steps 1,500 -> (\d),(\d+)\*\*',
                        section).expand(r'\1\2'))
  assert steps == 3000
  # ... and 2,750 since 2026-12-03, for the 1,200 s bound.
  steps = int(re.search(r'\| mtp_gloeckle \| \*\*steps 3,000 -> (\d),(\d+)\*\*',
                        bound).expand(r'\1\2'))
  gloeckle = experiment.load_experiment_module(
      str(root / 'experiments' / 'mtp_gloeckle.py'))
  assert gloeckle.get_config('quick').train.steps == steps == 2750
  assert 'Revised for the 1,200 s bound (2026-12-03' in gloeckle.__doc__
  assert 'Pre-registered seed count and design (2026-12-02' in gloeckle.__doc__

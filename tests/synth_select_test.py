"""lattice.synth.select: train until a held-out score enters a band, keep that model."""

import numpy as np
import pytest

from lattice import config as config_lib
from lattice.synth import generate, select

from conftest import tiny_config


def _files(tmp_path):
  docs = [{'text': f'{a}+{b}={a + b}'} for a in range(20) for b in range(20)]
  return [generate.write_jsonl(tmp_path / 'train.jsonl', docs)]


def test_stops_at_the_band_and_keeps_the_model_closest_to_its_centre(tmp_path):
  """Scores 0.45 and 0.90 at steps 2 and 4 of one 8-step run: training stops at
  step 4 (the first score >= 0.5) and keeps step 2 (0.45 is nearer 0.6 than 0.90),
  resumed once in between (the loop's resume-equals-uninterrupted property is
  tested in faults_test)."""
  cfg = config_lib.build(tiny_config(train={'steps': 8}))
  scripted = {2: 0.45, 4: 0.90, 6: 0.95, 8: 0.95}
  seen = []

  def score(out):
    seen.append(out['steps'])
    return scripted[out['steps']]

  out, history = select.train_to_band(cfg, _files(tmp_path), tmp_path / 'run', score,
                                      band=(0.5, 0.7), first=2, every=2, keep=3)
  assert seen == [2, 4]
  # keep=3: both segments' checkpoints stay (the kept step 2 can be restored).
  assert sorted(int(p.name) for p in (tmp_path / 'run' / 'checkpoints').iterdir()
                if p.name.isdigit()) == [2, 4]
  assert history == [{'step': 2, 'score': 0.45}, {'step': 4, 'score': 0.90}]
  assert (out['selected_step'], out['selected_score']) == (2, 0.45)
  assert int(out['state'].step) == 2 and out['wall_s'] > 0
  assert np.isfinite(out['train_loss'])


def test_bad_band_or_steps_raise_before_training(tmp_path):
  cfg = config_lib.build(tiny_config())
  with pytest.raises(ValueError, match='band'):
    select.train_to_band(cfg, [], tmp_path, lambda o: 0.0, band=(0.7, 0.5), first=2,
                         every=2)
  with pytest.raises(ValueError, match='every'):
    select.train_to_band(cfg, [], tmp_path, lambda o: 0.0, band=(0.5, 0.7), first=2,
                         every=0)
  with pytest.raises(ValueError, match='keep'):
    select.train_to_band(cfg, [], tmp_path, lambda o: 0.0, band=(0.5, 0.7), first=2,
                         every=2, keep=0)

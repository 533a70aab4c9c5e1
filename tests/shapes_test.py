"""Shapes generator: deterministic, and its answers agree with the rendered pixels."""

import numpy as np
import pytest

from lattice.data.tasks import shapes

BG = 0.15


def _rng(seed):
  return np.random.default_rng(seed)


def _cell_pixels(img, cell):
  r, c = divmod(cell, 2)
  return img[16 * r:16 * (r + 1), 16 * c:16 * (c + 1)]


def _measure(img, cell):
  """What the pixels of a cell show: None, or (color name, area, fill of bbox)."""
  px = _cell_pixels(img, cell)
  mask = np.any(np.abs(px - BG) > 1e-6, axis=-1)
  if not mask.any():
    return None
  colors = {tuple(v) for v in px[mask].round(3).tolist()}
  assert len(colors) == 1, colors
  name = [k for k, v in shapes.COLORS.items()
          if np.allclose(v, next(iter(colors)), atol=1e-3)]
  ys, xs = np.nonzero(mask)
  bbox = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
  return name[0], int(mask.sum()), mask.sum() / bbox


def _shape_from_fill(fill):
  # Square fills its box, a (pixelated) disc 0.78-0.89 of it, a triangle 0.5-0.6.
  return 'square' if fill > 0.93 else 'circle' if fill > 0.66 else 'triangle'


def test_deterministic():
  a = [shapes.interleaved_document(_rng(7)) for _ in range(2)]
  assert a[0] == a[1]
  s1, s2 = shapes.random_scene(_rng(3)), shapes.random_scene(_rng(3))
  assert s1 == s2
  np.testing.assert_array_equal(shapes.render(s1), shapes.render(s2))
  others = {shapes.random_scene(_rng(s)) for s in range(20)}
  assert len(others) > 15  # different seeds, different scenes


@pytest.mark.parametrize('seed', range(40))
def test_answers_match_pixels(seed):
  scene = shapes.random_scene(_rng(seed))
  img = shapes.render(scene)
  assert img.shape == (32, 32, 3) and img.dtype == np.float32
  seen = {cell: _measure(img, cell) for cell in range(4)}
  answers = dict(shapes.questions(scene))
  n_seen = sum(v is not None for v in seen.values())
  assert answers['how many shapes?'] == shapes.COUNT_WORDS[n_seen]
  for cell, name in enumerate(shapes.CELLS):
    got = seen[cell]
    if got is None:
      assert answers[f'what is at {name}?'] == 'nothing'
      continue
    color, area, fill = got
    shape = answers[f'what is at {name}?']
    assert shape == _shape_from_fill(fill)
    assert answers[f'what color is the {shape} at {name}?'] == color
    size = answers[f'is the {shape} at {name} small or large?']
    assert size == ('large' if area > 50 else 'small'), (size, area)
  for shape in shapes.SHAPES:
    for color in shapes.COLORS:
      present = any(v is not None and v[0] == color and _shape_from_fill(v[2]) == shape
                    for v in seen.values())
      assert answers[f'is there a {color} {shape}?'] == ('yes' if present else 'no')
  assert shapes.caption(scene).startswith(answers['how many shapes?'])


def test_documents_and_mix():
  rng = _rng(0)
  corpus = [b'def f(x):\n  return x\n' * 10]
  kinds = [shapes.mix_kind(rng, (0.45, 0.45, 0.10)) for _ in range(4000)]
  frac = {k: kinds.count(k) / len(kinds) for k in shapes.KINDS}
  assert abs(frac['caption'] - 0.45) < 0.03 and abs(frac['text'] - 0.10) < 0.02
  doc = shapes.caption_document(rng)
  assert doc[0][0] == 'image' and doc[1] == ('text', shapes.caption(doc[0][1]))
  doc = shapes.interleaved_document(rng)
  scenes = [v for k, v in doc if k == 'image']
  assert 1 <= len(scenes) <= 2
  for i, (kind, value) in enumerate(doc):
    if kind == 'answer':  # the answer follows its question and matches the last image
      q = doc[i - 1][1].split('q: ')[1].split(' a: ')[0]
      last = [v for k, v in doc[:i] if k == 'image'][-1]
      assert dict(shapes.questions(last))[q] == value
  text = shapes.text_document(rng, corpus, 16)
  assert text[0][0] == 'text' and len(text[0][1]) <= 16
  with pytest.raises(ValueError, match='kind'):
    shapes.document(rng, 'video', corpus, 10)

"""Procedural shapes images with captions and questions answerable only from the image.

A `Scene` (1-3 objects, each a shape, color and size in its own cell of a 2x2 grid,
jittered by a few pixels) is the single source of truth: `render` draws it as a
32x32 RGB image, `caption` describes it, `questions` derives question/answer pairs
from it. Nothing in the text around an image says what it shows, so a model can
only caption it or answer about it by looking at it.

Documents are lists of segments, the unit the multimodal packer tokenizes:
  ('text', str)     ordinary text (loss on it)
  ('answer', str)   an answer span (loss on it; also scored for exact-match accuracy)
  ('image', Scene)  an image (rendered by the packer)
Three kinds, mixed by ratio (Shukor et al. 2025, arXiv 2504.07951, trained on
45% image-caption, 45% interleaved, 10% text-only): `caption_document` (an image then
its caption), `interleaved_document` (1-2 images, each followed by questions and
answers, around connecting text) and `text_document` (a slice of a text corpus, e.g.
the Python standard library). Everything is a pure function of a numpy Generator.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

IMAGE_SIZE = 32
SHAPES = ('circle', 'square', 'triangle')
COLORS = {'red': (0.9, 0.1, 0.1), 'green': (0.1, 0.8, 0.2), 'blue': (0.15, 0.3, 0.95),
          'yellow': (0.95, 0.85, 0.1)}
SIZES = {'small': 3, 'large': 6}  # half-width in pixels: with the jitter, inside a 16x16 cell
CELLS = ('top left', 'top right', 'bottom left', 'bottom right')
COUNT_WORDS = ('zero', 'one', 'two', 'three', 'four')
MAX_OBJECTS = 3
KINDS = ('caption', 'interleaved', 'text')

Segment = tuple[str, object]


@dataclasses.dataclass(frozen=True)
class Obj:
  shape: str
  color: str
  size: str
  cell: int          # index into CELLS
  dy: int = 0        # jitter of the centre, pixels
  dx: int = 0


@dataclasses.dataclass(frozen=True)
class Scene:
  objects: tuple[Obj, ...]  # sorted by cell

  def at(self, cell: int) -> Obj | None:
    return next((o for o in self.objects if o.cell == cell), None)


def random_scene(rng: np.random.Generator) -> Scene:
  n = int(rng.integers(1, MAX_OBJECTS + 1))
  cells = sorted(rng.choice(len(CELLS), size=n, replace=False).tolist())
  objs = []
  for cell in cells:
    objs.append(Obj(shape=SHAPES[rng.integers(len(SHAPES))],
                    color=list(COLORS)[rng.integers(len(COLORS))],
                    size=list(SIZES)[rng.integers(len(SIZES))], cell=int(cell),
                    dy=int(rng.integers(-1, 2)), dx=int(rng.integers(-1, 2))))
  return Scene(tuple(objs))


def render(scene: Scene, size: int = IMAGE_SIZE) -> np.ndarray:
  """The scene as float32 [size, size, 3] in [0, 1] on a dark grey background."""
  img_HxWxC = np.full((size, size, 3), 0.15, np.float32)
  yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
  half_cell = size / 4
  for o in scene.objects:
    cy = (2 * (o.cell // 2) + 1) * half_cell + o.dy
    cx = (2 * (o.cell % 2) + 1) * half_cell + o.dx
    r = SIZES[o.size] * size / IMAGE_SIZE
    dy, dx = yy - cy, xx - cx
    if o.shape == 'circle':
      mask = dy * dy + dx * dx <= r * r
    elif o.shape == 'square':
      mask = (np.abs(dy) <= r * 0.85) & (np.abs(dx) <= r * 0.85)
    else:  # triangle pointing up: apex at the top, base at the bottom
      mask = (dy <= r) & (dy >= -r) & (np.abs(dx) <= (dy + r) / 2)
    img_HxWxC[mask] = COLORS[o.color]
  return img_HxWxC


def _describe(o: Obj) -> str:
  return f'a {o.size} {o.color} {o.shape} at {CELLS[o.cell]}'


def caption(scene: Scene) -> str:
  n = len(scene.objects)
  things = 'shape' if n == 1 else 'shapes'
  return f'{COUNT_WORDS[n]} {things}: ' + ', '.join(_describe(o) for o in scene.objects) + '.'


def questions(scene: Scene) -> list[tuple[str, str]]:
  """Every question the scene answers, with its answer (derived from the scene)."""
  qa = [('how many shapes?', COUNT_WORDS[len(scene.objects)])]
  for cell, name in enumerate(CELLS):
    o = scene.at(cell)
    qa.append((f'what is at {name}?', o.shape if o else 'nothing'))
    if o:
      qa.append((f'what color is the {o.shape} at {name}?', o.color))
      qa.append((f'is the {o.shape} at {name} small or large?', o.size))
  for shape in SHAPES:
    for color in COLORS:
      present = any(o.shape == shape and o.color == color for o in scene.objects)
      qa.append((f'is there a {color} {shape}?', 'yes' if present else 'no'))
  return qa


def sample_questions(rng: np.random.Generator, scene: Scene, k: int) -> list[tuple[str, str]]:
  """k distinct questions, balanced so 'yes'/'no' and 'nothing' do not dominate."""
  qa = questions(scene)
  kinds = {}
  for q, a in qa:
    kinds.setdefault(q.split()[0] + ' ' + q.split()[1], []).append((q, a))
  groups = list(kinds.values())
  out = []
  for g in rng.permutation(len(groups))[:k]:
    group = groups[g]
    out.append(group[rng.integers(len(group))])
  return out


def caption_document(rng: np.random.Generator) -> list[Segment]:
  scene = random_scene(rng)
  return [('image', scene), ('text', caption(scene))]


def interleaved_document(rng: np.random.Generator) -> list[Segment]:
  """1-2 images, each followed by 1-2 questions; answers are 'answer' segments."""
  segments: list[Segment] = []
  n_images = int(rng.integers(1, 3))
  for i in range(n_images):
    scene = random_scene(rng)
    segments.append(('text', 'look:' if i == 0 else ' and now:'))
    segments.append(('image', scene))
    for q, a in sample_questions(rng, scene, int(rng.integers(1, 3))):
      segments.append(('text', f' q: {q} a: '))
      segments.append(('answer', a))
      segments.append(('text', '.'))
  return segments


def text_document(rng: np.random.Generator, corpus: Sequence[bytes],
                  max_bytes: int) -> list[Segment]:
  """A random slice (up to max_bytes) of a random corpus document, as text."""
  for _ in range(8):
    doc = corpus[int(rng.integers(len(corpus)))]
    if doc:
      break
  start = int(rng.integers(max(len(doc) - max_bytes, 0) + 1))
  return [('text', doc[start:start + max_bytes].decode('utf-8', errors='replace'))]


def mix_kind(rng: np.random.Generator, ratios: Sequence[float]) -> str:
  """One of KINDS drawn with probabilities `ratios` (normalized)."""
  p = np.asarray(ratios, np.float64)
  return KINDS[int(rng.choice(len(KINDS), p=p / p.sum()))]


def document(rng: np.random.Generator, kind: str, corpus: Sequence[bytes],
             max_text_bytes: int) -> list[Segment]:
  if kind == 'caption':
    return caption_document(rng)
  if kind == 'interleaved':
    return interleaved_document(rng)
  if kind == 'text':
    return text_document(rng, corpus, max_text_bytes)
  raise ValueError(f'shapes.document: kind must be one of {KINDS}, got {kind!r}')

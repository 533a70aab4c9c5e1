"""The `shapes` data source: image+text documents packed into interleaved rows.

Shape legend: B rows, L = data.seq_len, N = frontend.max_images image slots per row,
H = W = image size, C = 3, P patches per image.

A row is a window of L+1 tokens built by packing whole documents (BOS ... EOS); an
image is BOI, P x IMG (one slot per patch), EOI. Documents are drawn from the
config's caption / interleaved / text mix until the next one does not fit (in length
or image slots); the rest of the row is then filled with a text-only slice, so no
compute goes to padding and no image is ever cut. Every batch is a dict of numpy
arrays:

  inputs       int32[B, L]       window[:-1] (IMG at patch slots)
  targets      int32[B, L]       window[1:]
  weights      float32[B, L]     1 on text targets: not IMG / EOI (an image's content
                                 and end are not text to predict) and not PAD
  images       float32[B, N, H, W, C]  the row's images in order, zeros in unused slots
  patch_index  int32[B, L]       for an input IMG token, its index into the row's
                                 flattened [N * P] patches; -1 for text
  modality     int32[B, L]       1 on image inputs (patch slots), 0 on text
  answer_id    int32[B, L]       for a target inside a question's answer, which
                                 answer of the row (0..); -1 elsewhere
  segment_ids  int32[B, L]       the input's document within its row, from 1
  positions    int32[B, L]       the input's position within its document, from 0

As in the text pipeline, attention and the loss never cross a document boundary:
a target in the next document (the BOS after an EOS) gets weight 0.

Batch (step) s, row r is a pure function of (seed, split, s, r), so the train
iterator is a grain `MapDataset.range(...).map(...)` iterator whose checkpointable
state is just the next step: `lattice.train.checkpoint` saves and resumes it as it
does the text pipeline's.
"""

from __future__ import annotations

import sys
import typing

import grain
import jax
import numpy as np

from lattice.errors import ConfigError
from lattice.data import pipeline
from lattice.data import sources
from lattice.data import token_files
from lattice.data import tokenizer as tokenizer_lib
from lattice.data.tasks import shapes

if typing.TYPE_CHECKING:  # annotations only: lattice.config imports the kind tables
  from lattice import config as config_lib

Batch = dict[str, np.ndarray]
_SPLIT_IDS = {'train': 0, 'validation': 1}
MAX_REJECTS = 3  # multimodal documents that did not fit before the row is filled


def n_patches(image_size: int, patch: int) -> int:
  """Patches per image (square images, square patches)."""
  return (image_size // patch) ** 2


def text_corpus(cfg: config_lib.Config, split: str):
  """The text documents the rows mix in (`sources.TEXT_OF_BATCH_SOURCE`: stdlib)."""
  return sources.get_source(cfg.data, split)


def ratios(f: config_lib.FrontendConfig) -> tuple[float, float, float]:
  return (f.caption_ratio, f.interleaved_ratio, f.text_ratio)


def _tokenize(doc, tok, P: int, first_image: int, first_answer: int):
  """A document -> (tokens, patch index, answer id, scenes) with BOS/EOS."""
  toks, pidx, ans, scenes = [tok.bos_id], [-1], [-1], []
  n_answers = 0
  for kind, value in doc:
    if kind == 'image':
      k = first_image + len(scenes)
      scenes.append(value)
      toks += [tok.boi_id] + [tok.img_id] * P + [tok.eoi_id]
      pidx += [-1] + list(range(k * P, (k + 1) * P)) + [-1]
      ans += [-1] * (P + 2)
    else:
      ids = tok.encode(value).tolist()
      toks += ids
      pidx += [-1] * len(ids)
      if kind == 'answer':
        ans += [first_answer + n_answers] * len(ids)
        n_answers += 1
      else:
        ans += [-1] * len(ids)
  toks.append(tok.eos_id)
  pidx.append(-1)
  ans.append(-1)
  return toks, pidx, ans, scenes


def pack_row(rng: np.random.Generator, cfg: config_lib.Config, corpus,
             tok: tokenizer_lib.ByteTokenizer) -> dict[str, np.ndarray]:
  """One window of L+1 tokens: tokens, patch index, answer id [L+1]; images [N,...]."""
  f, L1 = cfg.model.frontend, cfg.data.seq_len + 1
  P = n_patches(f.image_size, f.patch_size)
  toks, pidx, ans, scenes = [], [], [], []
  rejects = 0
  while len(toks) < L1:
    kind = shapes.mix_kind(rng, ratios(f))
    room = L1 - len(toks)
    doc = shapes.document(rng, kind, corpus, int(rng.integers(room // 2, room) + 1))
    n_answers = max(ans, default=-1) + 1
    t, p, a, s = _tokenize(doc, tok, P, len(scenes), n_answers)
    fits = len(t) <= room and len(scenes) + len(s) <= f.max_images
    if not fits and kind != 'text' and rejects < MAX_REJECTS:
      rejects += 1
      continue
    if not fits:  # fill the tail with text (never a cut image)
      t, p, a, s = _tokenize(shapes.text_document(rng, corpus, room), tok, P, 0, 0)
    toks += t[:room]
    pidx += p[:room]
    ans += a[:room]
    scenes += s
  images = np.zeros((f.max_images, f.image_size, f.image_size, 3), np.float32)
  for i, scene in enumerate(scenes):
    images[i] = shapes.render(scene, f.image_size)
  return {'tokens': np.asarray(toks, np.int32), 'patch_index': np.asarray(pidx, np.int32),
          'answer_id': np.asarray(ans, np.int32), 'images': images,
          'scenes': scenes}


def to_example(rows: list[dict], tok: tokenizer_lib.ByteTokenizer) -> Batch:
  """Stacks packed windows into the model batch (see the module docstring)."""
  w_BxL1 = np.stack([r['tokens'] for r in rows])
  pidx_BxL1 = np.stack([r['patch_index'] for r in rows])
  targets = w_BxL1[:, 1:]
  text = (targets != tok.img_id) & (targets != tok.eoi_id) & (targets != tok.pad_id)
  segments_BxL1, positions_BxL1 = token_files.segments(w_BxL1, tok.eos_id)
  same_doc = segments_BxL1[:, 1:] == segments_BxL1[:, :-1]
  return {
      'inputs': w_BxL1[:, :-1], 'targets': targets,
      'weights': (text & same_doc).astype(np.float32),
      'segment_ids': segments_BxL1[:, :-1], 'positions': positions_BxL1[:, :-1],
      'images': np.stack([r['images'] for r in rows]),
      'patch_index': pidx_BxL1[:, :-1],
      'modality': (pidx_BxL1[:, :-1] >= 0).astype(np.int32),
      'answer_id': np.stack([r['answer_id'] for r in rows])[:, 1:],
  }


def require_bytes(cfg: config_lib.Config) -> None:
  """Raises ConfigError naming data.tokenizer unless it is `byte`: image rows use
  the byte vocabulary's reserved BOI/EOI/IMG ids (and discrete image codes follow
  it), which a subword vocabulary does not have."""
  if (cfg.data.tokenizer or 'byte') != 'byte':
    raise ConfigError(
        f'data.tokenizer: data.source=shapes builds byte-level image+text rows (the '
        f'BOI/EOI/IMG ids); set data.tokenizer=byte, got {cfg.data.tokenizer!r}')


class _MakeBatch(grain.transforms.Map):
  """Step index -> this process's rows of that step's global batch."""

  def __init__(self, cfg: config_lib.Config, split: str, seed: int, rows: range):
    require_bytes(cfg)
    self._cfg, self._split, self._seed, self._rows = cfg, split, seed, rows
    self._tok = tokenizer_lib.ByteTokenizer()
    self._corpus = None  # text documents, opened on first use

  def map(self, step: int) -> Batch:
    if self._corpus is None:
      self._corpus = text_corpus(self._cfg, self._split)
    corpus = self._corpus
    out = []
    for r in self._rows:
      rng = np.random.default_rng([self._seed, _SPLIT_IDS[self._split], int(step), r])
      out.append(pack_row(rng, self._cfg, corpus, self._tok))
    return to_example(out, self._tok)


def _rows(cfg: config_lib.Config, process_index, process_count) -> range:
  index = jax.process_index() if process_index is None else process_index
  count = jax.process_count() if process_count is None else process_count
  b = pipeline.local_batch_size(cfg.data, count)
  return range(index * b, (index + 1) * b)


def make_train_iterator(cfg: config_lib.Config, tok=None, *, process_index=None,
                        process_count=None) -> grain.DatasetIterator:
  """Infinite, checkpointable iterator of this process's image+text train batches."""
  del tok  # the byte tokenizer's ids are fixed (BOI/EOI/IMG)
  seed = cfg.data.shuffle_seed
  ds = grain.MapDataset.range(0, sys.maxsize).map(
      _MakeBatch(cfg, 'train', seed, _rows(cfg, process_index, process_count)))
  # Two threads build the next batches while the current step runs.
  return iter(ds.to_iter_dataset(grain.ReadOptions(num_threads=2,
                                                   prefetch_buffer_size=4)))


def make_eval_batches(cfg: config_lib.Config, tok=None, n_batches: int | None = None, *,
                      process_index=None, process_count=None) -> list[Batch]:
  """`data.eval_batches` fixed validation batches (validation text for text docs)."""
  del tok
  n = cfg.data.eval_batches if n_batches is None else n_batches
  make = _MakeBatch(cfg, 'validation', cfg.data.shuffle_seed,
                    _rows(cfg, process_index, process_count))
  return [make.map(i) for i in range(n)]

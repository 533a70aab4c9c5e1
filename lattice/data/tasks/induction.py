"""Induction stories: simple generated stories whose characters have random two-token names.

Gloeckle et al. 2024 (arXiv 2404.19737, §4.1) measure induction with children's
stories in which every character name is replaced by a random two-token name: the
second token of a name can only be predicted by copying it from an earlier mention
(an induction head). The metric is the accuracy on the second token of names that
have already appeared in the story.

With the byte tokenizer a two-token name is two bytes: an uppercase letter and a
lowercase letter ('Kv', 'Qe'). Within a story the characters' first letters differ,
and no template word starts with a letter a name may start with, so once a name
has appeared its second byte is fully determined by the context, and before that it
is a uniform guess (1/26).

API:
  story(rng) -> (text, offsets)     offsets: byte offsets of the second letter of
                                    every repeated (not first) name mention
  generate(n, seed) -> [(text, offsets)]
  eval_arrays(n, seed, seq_len, tok) -> inputs, targets, mask   (encoded with the
                                    run's tokenizer; mask: repeated-name second
                                    tokens, as next-token targets)
The `induction` data source serves stories (train and validation from different
seeds).
"""

from __future__ import annotations

import string

import grain
import numpy as np

from lattice.errors import ConfigError
from lattice.data import tokenizer as tokenizer_lib

PLACES = ('park', 'forest', 'garden', 'river', 'market', 'school', 'beach', 'farm')
THINGS = ('ball', 'kite', 'cake', 'frog', 'book', 'hat', 'boat', 'cat', 'box', 'apple')
FEELINGS = ('happy', 'sad', 'tired', 'hungry', 'brave', 'sleepy')
OPENINGS = (
    'Once upon a time, {a} and {b} lived near a {place}.',
    'Long ago, {a} met {b} at the {place}.',
)
SENTENCES = (
    '{a} liked to play with a {thing}.',
    'One day, {a} went to the {place} with {b}.',
    '{a} gave {b} a {thing}.',
    '{b} said to {a}, "I am {feeling}."',
    '{a} was {feeling}, so {b} found a {thing}.',
    'Then {a} and {b} looked for a {thing} at the {place}.',
    '{b} laughed and {a} smiled.',
    'In the end, {a} thanked {b}.',
)
_TEMPLATES = OPENINGS + SENTENCES
# Capitals a name may not start with: those that begin a template word ('Once', 'I').
_BLOCKED = {w[0] for t in _TEMPLATES for w in t.replace('"', ' ').split() if w[:1].isupper()}
FIRST_LETTERS = tuple(c for c in string.ascii_uppercase if c not in _BLOCKED)
SECOND_LETTERS = string.ascii_lowercase


def _names(rng: np.random.Generator, k: int) -> list[str]:
  firsts = rng.choice(len(FIRST_LETTERS), size=k, replace=False)
  return [FIRST_LETTERS[f] + SECOND_LETTERS[int(rng.integers(26))] for f in firsts]


def story(rng: np.random.Generator, n_sentences: tuple[int, int] = (4, 8)
          ) -> tuple[str, list[int]]:
  """One story and the byte offsets of the second letter of each repeated name."""
  a, b = _names(rng, 2)
  pick = lambda seq: seq[int(rng.integers(len(seq)))]
  lines = [pick(OPENINGS)]
  for _ in range(int(rng.integers(n_sentences[0], n_sentences[1] + 1))):
    lines.append(pick(SENTENCES))
  text, offsets, seen = '', [], set()
  for i, template in enumerate(lines):
    # Characters swap roles at random so both names recur in every position.
    x, y = (a, b) if i == 0 or rng.random() < 0.5 else (b, a)
    parts = template.replace('{a}', '\0a\0').replace('{b}', '\0b\0').split('\0')
    sentence = ''
    start = len(text) + (1 if text else 0)  # the joining space
    for part in parts:
      if part in ('a', 'b'):
        name = x if part == 'a' else y
        if name in seen:
          offsets.append(start + len(sentence) + 1)
        seen.add(name)
        sentence += name
      else:
        sentence += part.format(place=pick(PLACES), thing=pick(THINGS),
                                feeling=pick(FEELINGS))
    text += (' ' if text else '') + sentence
  return text, offsets


def _story_rng(seed: int, index: int) -> np.random.Generator:
  return np.random.default_rng([seed, index, 0x1D0C])


def generate(n: int, seed: int) -> list[tuple[str, list[int]]]:
  """`n` stories, story i a function of (seed, i) only."""
  return [story(_story_rng(seed, i)) for i in range(n)]


def _token_starts(tok, ids: np.ndarray, text: str) -> tuple[np.ndarray, np.ndarray]:
  """int64[len(ids)] twice: the byte offset in `text` where each token's bytes
  start, and how many bytes each token writes (specials: 0).

  Raises ConfigError naming data.tokenizer when the tokens' bytes do not spell
  `text` (a tokenizer that normalises text cannot place the names' letters).
  """
  table = tok.token_bytes()
  pieces = [table[i] if 0 <= i < len(table) else b'' for i in ids.tolist()]
  lengths = np.asarray([len(p) for p in pieces], np.int64)
  if b''.join(pieces) != text.encode('utf-8'):
    raise ConfigError(
        'data.tokenizer: induction accuracy needs a tokenizer whose tokens spell the '
        'story byte for byte; this one does not (it normalises or drops text)')
  return np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64), lengths


def eval_arrays(n: int, seed: int, seq_len: int, tok=None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """One story per row, BOS first, encoded with `tok`, cut to seq_len targets and
  PAD-filled.

  Args:
    n, seed: the stories (`generate(n, seed)`).
    seq_len: targets per row.
    tok: the run's tokenizer (`lattice.data.tokenizer.make_tokenizer(data.tokenizer)`);
      None means the byte tokenizer.

  Returns:
    int32 inputs_NxL, int32 targets_NxL (inputs shifted by one) and float32 mask_NxL:
    1 where the target is a token that starts inside a repeated name mention after
    the name's first byte (with bytes: the name's second letter). A subword
    tokenizer that keeps a name in one token gives that mention no target.

  Raises:
    ConfigError (naming data.tokenizer): the tokenizer has no PAD id, or its tokens
      do not spell the story byte for byte.
  """
  tok = tok or tokenizer_lib.ByteTokenizer()
  if tok.pad_id is None:
    raise ConfigError('data.tokenizer: induction eval rows need a PAD id; '
                                 'this tokenizer has none')
  window = np.full((n, seq_len + 1), tok.pad_id, np.int32)
  mask = np.zeros((n, seq_len + 1), np.float32)
  for row, (text, offsets) in enumerate(generate(n, seed)):
    ids = np.asarray(tok.encode(text, bos=True, eos=True), np.int32)
    starts, lengths = _token_starts(tok, ids, text)
    ids, starts, lengths = ids[:seq_len + 1], starts[:seq_len + 1], lengths[:seq_len + 1]
    window[row, :len(ids)] = ids
    for off in offsets:  # byte offset of the name's second letter; name starts off - 1
      hit = np.nonzero((starts > off - 1) & (starts <= off) & (lengths > 0))[0]
      mask[row, hit[hit >= 1]] = 1.0
  return window[:, :-1], window[:, 1:], mask[:, 1:]


class _Stories:
  """Lazily generated stories: a grain random-access data source."""

  def __init__(self, n: int, seed: int):
    self._n, self._seed = n, seed

  def __len__(self) -> int:
    return self._n

  def __getitem__(self, i: int) -> str:
    return story(_story_rng(self._seed, int(i)))[0]


TRAIN_STORIES = 1 << 20
EVAL_STORIES = 2048
EVAL_SEED_OFFSET = 7919  # validation stories come from a different seed stream


def source(data_cfg, split: str) -> grain.MapDataset:
  seed = data_cfg.shuffle_seed + (EVAL_SEED_OFFSET if split == 'validation' else 0)
  n = TRAIN_STORIES if split == 'train' else EVAL_STORIES
  return grain.MapDataset.source(_Stories(n, seed))

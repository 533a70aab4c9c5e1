"""Packed documents do not see each other: block-diagonal attention + per-document RoPE.

The same document B is packed after two different previous documents (of different
lengths, the first holding an image for the multimodal frontends) and alone at
position 0; every head's logits on B's tokens must agree (up to float tolerance) in
the three rows, and equal the unpacked model's on B alone. Without segment ids the
rows must differ, so the test can fail. One tiny model per row of `ROWS`;
the three rows are one batch, so each pair compiles one forward.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lattice import config as config_lib
from lattice import model as model_lib
from lattice.data import tokenizer as tokenizer_lib
from lattice.mtp import losses as mtp_losses

from conftest import tiny_config

L, N_B = 24, 9           # row length; document B's length
A_LENGTHS = (5, 11)      # the previous documents' lengths (B starts at 5, then 11)
PAD = tokenizer_lib.PAD_ID


def _cfg(frontend: str, heads: str) -> config_lib.Config:
  model = {'d_model': 16, 'n_layers': 2, 'max_len': 64, 'vocab_size': 384,
           'attention': {'n_heads': 2, 'n_kv_heads': 1},
           'mtp': {'kind': heads, 'n': 3, 'depth': 2},
           'frontend': {'kind': frontend, 'image_size': 16, 'patch_size': 8,
                        'max_images': 1, 'enc_d_model': 8, 'enc_heads': 2}}
  data = {'seq_len': L, 'batch_size': 3}
  if frontend != 'text':
    data['source'] = 'shapes'
  return config_lib.build(tiny_config(model=model, data=data))


def _packed_batch(frontend: str) -> tuple[dict, np.ndarray]:
  """Rows 0, 1: document A_r then B then padding; row 2: B then padding. Returns
  the batch and B's start in each row."""
  rng = np.random.default_rng(0)
  doc_b = rng.integers(1, 256, N_B)
  inputs = np.full((3, L + 1), PAD, np.int32)
  segments = np.zeros((3, L + 1), np.int32)
  positions = np.zeros((3, L + 1), np.int32)
  patch_index = np.full((3, L + 1), -1, np.int32)
  starts = np.array([*A_LENGTHS, 0])
  for r, a in enumerate(starts):
    inputs[r, :a] = rng.integers(1, 256, a)
    inputs[r, a:a + N_B] = doc_b
    segments[r, :a], segments[r, a:a + N_B] = 1, 1 + (a > 0)
    positions[r, :a], positions[r, a:a + N_B] = np.arange(a), np.arange(N_B)
    if a:  # the previous document holds the row's image (4 patch slots)
      patch_index[r, 1:5] = np.arange(4)
      inputs[r, 1:5] = tokenizer_lib.IMG_ID
  batch = {'inputs': inputs[:, :-1], 'targets': inputs[:, 1:],
           'weights': (inputs[:, 1:] != PAD).astype(np.float32),
           'segment_ids': segments[:, :-1], 'positions': positions[:, :-1]}
  if frontend != 'text':
    batch['images'] = rng.uniform(size=(3, 1, 16, 16, 3)).astype(np.float32)
    batch['patch_index'] = patch_index[:, :-1]
    batch['modality'] = (patch_index[:, :-1] >= 0).astype(np.int32)
  return jax.tree.map(jnp.asarray, batch), starts


def _doc_b_logits(out: dict, starts: np.ndarray) -> list[np.ndarray]:
  """Every head's logits on B's positions: [heads][row] -> [N_B, V]."""
  heads = [out['logits'], *out['mtp_logits']]
  return [[np.asarray(h[r, s:s + N_B]) for r, s in enumerate(starts)] for h in heads]


# Each frontend and each kind of output heads once (the stages are independent;
# three rows keep the suite cheap).
ROWS = [('text', 'sequential'), ('early', 'parallel'), ('late', 'none')]


@pytest.mark.parametrize('frontend,heads', ROWS)
def test_logits_do_not_depend_on_the_previous_document(frontend, heads):
  cfg = _cfg(frontend, heads)
  model = model_lib.make_model(cfg.model)
  batch, starts = _packed_batch(frontend)
  variables = model.init(jax.random.key(0), batch)
  outputs = jax.jit(lambda v, b: model.apply(v, b, method='outputs'))

  for head in _doc_b_logits(outputs(variables, batch), starts):
    for row in head[:2]:
      np.testing.assert_allclose(row, head[2], atol=2e-5, rtol=2e-5)

  # The unpacked model on B alone (no segment ids, positions 0..N_B-1): same logits.
  alone = model.apply(variables, batch['inputs'][2:, :N_B])
  np.testing.assert_allclose(np.asarray(alone[0]),
                             _doc_b_logits(outputs(variables, batch), starts)[0][2],
                             atol=2e-5, rtol=2e-5)

  # Control: without the document layout, B does see the previous document.
  crossing = {k: v for k, v in batch.items() if k not in ('segment_ids', 'positions')}
  main = _doc_b_logits(outputs(variables, crossing), starts)[0]
  assert np.abs(main[0] - main[2]).max() > 1e-3


def test_multi_token_targets_stop_at_the_document_boundary():
  # Row: document 1 = inputs 0..3, document 2 = inputs 4..7; weights as the packer
  # gives them (0 on the target that crosses the boundary, at input 3).
  segments = jnp.asarray([[1, 1, 1, 1, 2, 2, 2, 2]])
  weights = jnp.asarray([[1, 1, 1, 0, 1, 1, 1, 1]], jnp.float32)
  batch = {'targets': jnp.arange(8)[None] + 1, 'weights': weights,
           'segment_ids': segments}
  _, w3 = mtp_losses.shifted_targets(batch, 3)   # token t+3 from input t
  np.testing.assert_array_equal(w3[0], [1, 0, 0, 0, 1, 1, 0, 0])
  logits = jax.random.normal(jax.random.key(0), (1, 8, 16))
  np.testing.assert_allclose(mtp_losses.head_ce_dynamic(logits, batch, jnp.asarray(2)),
                             mtp_losses.head_ce(logits, batch, 3))
  no_docs = {k: v for k, v in batch.items() if k != 'segment_ids'}
  np.testing.assert_array_equal(mtp_losses.shifted_targets(no_docs, 3)[1][0],
                                [1, 0, 1, 1, 1, 1, 0, 0])

"""lattice.cluster (one k-means) and lattice.agents.routing."""

import numpy as np

from lattice import cluster
from lattice.agents import routing


def test_kmeans_finds_planted_clusters_both_inits():
  rng = np.random.default_rng(0)
  centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
  x = np.concatenate([c + rng.normal(0, 0.1, (30, 2)) for c in centres])
  for init, restarts in (('random_rows', 1), ('kmeans++', 4)):
    c, labels = cluster.kmeans(x, 3, iters=20, init=init, restarts=restarts,
                               dtype=np.float64)
    # Each planted cluster is one label, and its centre is near the planted one.
    assert len({tuple(labels[i * 30:(i + 1) * 30]) for i in range(3)}) == 3
    for i in range(3):
      assert len(set(labels[i * 30:(i + 1) * 30].tolist())) == 1
      assert np.abs(c[labels[i * 30]] - centres[i]).max() < 0.1
    np.testing.assert_array_equal(cluster.nearest(x, c), labels)


def test_fewer_distinct_rows_than_centres_repeats_them():
  x = np.array([[1.0, 1.0]] * 4 + [[2.0, 2.0]] * 4)
  c, labels = cluster.kmeans(x, 4)
  assert c.shape == (4, 2) and c.dtype == np.float32
  assert set(map(tuple, c.tolist())) == {(1.0, 1.0), (2.0, 2.0)}


def test_routing_sends_requests_to_their_topic():
  weather = [f'what is the weather in city {i} tomorrow' for i in range(6)]
  maths = [f'add {i} and {i + 3} then multiply by 2' for i in range(6)]
  centres, labels = routing.fit(weather + maths, 2)
  assert len(set(labels[:6].tolist())) == 1 and len(set(labels[6:].tolist())) == 1
  assert labels[0] != labels[6]
  routed = routing.route(['weather in paris tomorrow', 'add 7 and 9'], centres)
  assert routed.tolist() == [labels[0], labels[6]]

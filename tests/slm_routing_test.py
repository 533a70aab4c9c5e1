"""Routing by logged tool family (lattice/agents/routing.label_centres)."""

import numpy as np
import pytest

from lattice.agents import routing
from lattice.data.tasks import toolcalls


def test_label_centres_route_requests_to_their_logged_family():
  names = list(toolcalls.CLUSTERS)
  logs = toolcalls.generate(400, 1, 'train')
  labels = np.asarray([names.index(e.cluster) for e in logs])
  centres = routing.label_centres([e.request for e in logs], labels, len(names))
  test = toolcalls.generate(200, 2, 'test')
  routed = routing.route([e.request for e in test], centres)
  hit = np.mean([names[r] == e.cluster for r, e in zip(routed, test)])
  assert hit > 0.9  # request wording identifies the family; chance is 0.25


def test_a_family_with_no_log_is_never_routed_to():
  logs = toolcalls.generate(50, 1, 'train')
  centres = routing.label_centres([e.request for e in logs], np.zeros(50, int), 3)
  assert set(routing.route([e.request for e in logs], centres).tolist()) == {0}
  with pytest.raises(ValueError):
    routing.label_centres(['a'], np.asarray([3]), 3)

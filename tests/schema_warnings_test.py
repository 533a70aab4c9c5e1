"""The schema compiler's warnings reach the server's responses (never silent)."""

import json

from fastapi.responses import StreamingResponse

from lattice.decode import constraints
from lattice.serve import app as app_lib

_SCHEMA = {'type': 'object', 'required': ['id'],
           'properties': {'id': {'type': 'integer'},
                          'big': {'type': 'string', 'pattern': '^[a-f0-9]{40}$'}}}


def test_shed_members_surface_in_json_bodies_and_stream_headers():
  index = constraints.for_schema(_SCHEMA, options=constraints.Options(max_object_states=30))
  assert index.warnings and "['big']" in index.warnings[0]
  body = app_lib._warned({'id': 'cmpl-1', 'choices': []}, index)  # pylint: disable=protected-access
  assert body['warnings'] == list(index.warnings) and body['id'] == 'cmpl-1'
  stream = app_lib._warned(StreamingResponse(iter(())), index)  # pylint: disable=protected-access
  assert json.loads(stream.headers['x-lattice-warnings']) == list(index.warnings)
  # Without warnings (or without a constraint) nothing changes.
  plain = constraints.for_schema(_SCHEMA)
  assert app_lib._warned({'id': 'x'}, plain) == {'id': 'x'}  # pylint: disable=protected-access
  assert app_lib._warned({'id': 'x'}, None) == {'id': 'x'}  # pylint: disable=protected-access

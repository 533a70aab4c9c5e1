"""JSON Schema -> byte-regex AST for the constrained decoder (see `compile`)."""

from lattice.decode.jsonschema.compile import Compiler
from lattice.decode.jsonschema.compile import Options
from lattice.decode.jsonschema.resolve import SchemaError

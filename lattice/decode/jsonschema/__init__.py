"""JSON Schema -> byte-regex AST for the constrained decoder (see `compile`).

Supported (drafts 4 to 2020-12): `type` (a name, a list, or absent), `enum`,
`const`; integer `minimum`/`maximum`/`exclusive*` (both drafts' forms) exactly,
`multipleOf` (integers up to 10000, powers of 1/2; a fractional 1/k such as 0.01
writes integers within +-1e5); number bounds as the sound
subset in `numbers`; `minLength`/`maxLength`, `pattern` (the `regex_parse` subset,
search semantics, `search.search_dfa`; a leading negative lookahead `^(?!L)R` on
printable ASCII), `format` (date-time, date, time, email, idn-email, hostname,
idn-hostname, ipv4, ipv6, uuid, uri, uri-reference, iri, iri-reference,
json-pointer, relative-json-pointer, duration, regex, uri-template: sound subsets,
see `formats`; unknown formats are annotations); `items` (schema or draft-4 tuple),
`prefixItems`, `additionalItems`, `minItems`/`maxItems`, `uniqueItems` (at most
one element); `properties`, `required`, `additionalProperties`,
`patternProperties`, `propertyNames` (string keywords, format, enum/const, a local
`$ref` to those), `minProperties`/
`maxProperties`, `dependentRequired`/`dependencies`, `unevaluatedProperties`
(false/schema after merging); `$ref` to local pointers (`#/$defs/..`,
`#/definitions/..`, any `#/...`; inside a subschema with its own `$id`, relative
to that resource), recursion bounded by `Options.max_ref_depth`;
`allOf` (merged), `anyOf`, `oneOf` (branches that provably exclude the others,
narrowed to make them so where it can);
as sound subsets (`rewrite`): `if`/`then`/`else` (instances of if and then),
`contains`/`minContains`/`maxContains` (every element satisfies contains),
`dependentSchemas` (merged for required names, other names never written),
`unevaluatedItems`, and `not` of a type, `required` (or anyOf of them), enum/const,
`pattern` (printable-ASCII strings it does not match), or allOf holding one.
Annotations (`title`, `description`, `$id`, `id`, `$schema`, `examples`,
`default`, `self`, `$comment`, `readOnly`, ...) and unknown keywords (`x-*`) are
ignored, as the specification treats them.

Not supported, one `SchemaError` naming the keyword and JSON pointer (where the
instance cannot do without the part: a required member, the only branch; else see
"left out" below, or every place with `Options.strict`): other forms
of `not` (and of lookaround), `maxContains` with `minContains: 0`, `$dynamicRef`/`$recursiveRef`,
remote `$ref`s, other fractional `multipleOf`, regex features outside `regex_parse` (lookaround, backreferences,
`\\b`, inner anchors).

Left out on purpose (sound, so never written): extra members when
`additionalProperties` is absent or true and the object declares properties
(`Options.extra_properties` turns them on), `\\u` escapes, whitespace, leap days
and leap seconds, numbers with exponents under bounds, array elements beyond
`Options.max_items_unroll` when `maxItems` is larger, string characters beyond
`Options.max_length_unroll` (256) when `maxLength` is larger, a `pattern`/`format`
under `maxLength` with its unbounded repetitions capped to fit the bound
(`regex_ast.cap_length`), more than one element under `uniqueItems`, objects with
fewer members than `minProperties` asks beyond one required extra member, instances
of `if` that fail it (the `else` side), more than 4 extra members under
`maxProperties`, and, reported (never silent: `Compiler.warnings` ->
`constraints.TokenIndex.warnings` -> the server's `warnings` field /
`X-Lattice-Warnings` header): optional members of an object whose automaton would
pass `Options.max_object_states` (largest first; past a state cap the schema is
compiled again with a quarter of that budget, down to 1000), and optional members
and anyOf/oneOf branches the compiler cannot enforce (an unsupported keyword or
regex, a remote `$ref`, a size cap; not with `Options.strict`).
"""

from lattice.decode.jsonschema.compile import Compiler
from lattice.decode.jsonschema.compile import Options
from lattice.decode.jsonschema.resolve import SchemaError

__all__ = ['Compiler', 'Options', 'SchemaError']

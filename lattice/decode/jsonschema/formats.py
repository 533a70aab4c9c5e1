"""`format` values as regexes: sound subsets of what `jsonschema`'s FormatChecker accepts.

Every regex here is matched whole (`re.fullmatch`) against the decoded string, and
each is a subset of the format's RFC grammar chosen so that the checker the tests
use (`jsonschema.FormatChecker`, draft 2020-12, with the `format-nongpl` extras)
accepts every match: dates stop at day 28 of February (no leap-year arithmetic),
seconds at 59 (no leap seconds), IPv6 is the full eight-group form, URIs are
`http(s)://host/path`, hostnames have letter-led labels (the checker rejects an
all-numeric last label). Formats the checker does not know are annotations
(`None` below means: not a checked format, nothing to enforce).
"""

from __future__ import annotations

_YEAR = r'(?:[1-9][0-9]{3}|0[1-9][0-9]{2}|00[1-9][0-9]|000[1-9])'
_MONTH_DAY = (r'(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])'
              r'|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)|02-(?:0[1-9]|1[0-9]|2[0-8]))')
DATE = _YEAR + '-' + _MONTH_DAY
_OFFSET = r'(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])'
TIME = r'(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,6})?' + _OFFSET
_LABEL = r'[a-z](?:[a-z0-9-]{0,20}[a-z0-9])?'
HOSTNAME = _LABEL + r'(?:\.' + _LABEL + '){0,3}'
_ATOM = r'[A-Za-z0-9_+-]{1,32}'
EMAIL = _ATOM + r'(?:\.' + _ATOM + r'){0,3}@' + HOSTNAME
_HEX = '[0-9a-fA-F]'
UUID = f'{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}'
_OCTET = r'(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])'
IPV4 = _OCTET + r'(?:\.' + _OCTET + '){3}'
IPV6 = f'{_HEX}{{1,4}}(?::{_HEX}{{1,4}}){{7}}'
URI = r'https?://' + HOSTNAME + r'(?::[1-9][0-9]{0,3})?(?:/[A-Za-z0-9._~-]{0,32}){0,8}'
JSON_POINTER = r'(?:/[A-Za-z0-9_.-]{0,32}){0,8}'
DURATION = r'P(?:[1-9][0-9]{0,3}[YMD]|T[1-9][0-9]{0,3}[HMS])'
# jsonschema's `color` (draft 3; needs `webcolors`): a CSS color name or a hex code
# (`webcolors.normalize_hex`): the 17 CSS 2.1 names and #rgb / #rrggbb.
_CSS21 = ('black|silver|gray|white|maroon|red|purple|fuchsia|green|lime|olive|yellow|'
          'navy|blue|teal|aqua|orange')
COLOR = f'#{_HEX}{{6}}|#{_HEX}{{3}}|' + _CSS21

FORMATS: dict[str, str | None] = {
    'date-time': DATE + 'T' + TIME, 'date': DATE, 'time': TIME,
    'email': EMAIL, 'idn-email': EMAIL, 'hostname': HOSTNAME, 'idn-hostname': HOSTNAME,
    'ipv4': IPV4, 'ipv6': IPV6, 'uuid': UUID,
    'uri': URI, 'uri-reference': URI, 'iri': URI, 'iri-reference': URI,
    'json-pointer': JSON_POINTER, 'duration': DURATION,
    # A literal is a valid regex, and a valid URI template.
    'regex': r'[A-Za-z0-9 _-]{0,32}', 'uri-template': URI,
    'relative-json-pointer': r'(?:0|[1-9][0-9]{0,3})' + JSON_POINTER,
    'color': COLOR,
}
# Checked by jsonschema's FormatChecker but not compiled here: an error, not a pass.
UNSUPPORTED: frozenset[str] = frozenset()

"""`ConfigError`, the one exception a user's config value raises.

It lives in its own leaf module so that a technique's option block (e.g.
`quant.linear.Quest`) can raise it without importing `lattice.config`, which
imports the techniques' tables to build the config (`lattice.config` re-exports it).
"""


class ConfigError(ValueError):
  """A config value a user can fix; the message names the field."""

"""The errors every host command turns into one line and exit code 2 (no
I/O here, so modules that only compile programs can raise them too), the
largest integer an option takes, and how a message describes a JSON value."""

import json

MAX_INT = 2 ** 31 - 1  # JAX counts in 32-bit integers


class RunError(ValueError):
  """A run cannot start, resume or be read as asked (the message says why)."""


class RunFileError(RunError):
  """A run's file cannot be used as it is: its message names the file and
  what in it is wrong (its field names are the file's, not options)."""


def describe(value) -> str:
  """What a JSON value is, in JSON's words."""
  if isinstance(value, bool) or value is None:
    return json.dumps(value)
  if isinstance(value, str):
    return f"the string {value[:40]!r}"
  return {dict: "an object", list: "a list"}.get(type(value),
                                                  f"the number {value!r}")

"""The error every host command turns into one line and exit code 2 (no
I/O here, so modules that only compile programs can raise it too)."""


class RunError(ValueError):
  """A run cannot start, resume or be read as asked (the message says why)."""

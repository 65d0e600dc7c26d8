"""The errors every host command turns into one line and exit code 2 (no
I/O here, so modules that only compile programs can raise them too)."""


class RunError(ValueError):
  """A run cannot start, resume or be read as asked (the message says why)."""


class RunFileError(RunError):
  """A run's file cannot be used as it is: its message names the file and
  what in it is wrong (its field names are the file's, not options)."""

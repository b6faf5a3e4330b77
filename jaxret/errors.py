"""The error type for bad input: the entry point prints its message on one line and exits 2."""


class UserError(Exception):
  """Bad input (config, flags, files, queries): what is wrong and what to do."""

"""Errors the entry point reports on one line (`error: ...`) with a non-zero exit code."""


class UserError(Exception):
  """Bad input (config, flags, files, queries): what is wrong and what to do."""


class RunError(Exception):
  """A run that cannot go on (non-finite values, an unwritable workdir): what
  happened, where, and what to do. Nothing poisoned or partial is left behind."""


class Preempted(Exception):
  """The run saved a checkpoint on request (SIGTERM) and stopped; exit code 0."""

"""Parsing a config file's string argument: 'runlocal,variant=S/16,steps=100'."""

import ml_collections


def parse_arg(arg, **defaults):
  """Returns a ConfigDict of `defaults` updated from `arg` (big_vision's convention).

  `arg` is comma-separated `key=value` pairs or bare `key`s (meaning True);
  values are converted to the type of the default. Unknown keys are refused.
  """
  result = ml_collections.ConfigDict(dict(defaults))
  if not arg:
    return result
  for item in arg.split(','):
    key, sep, value = item.partition('=')
    key = key.strip()
    if key not in defaults:
      raise ValueError(f'unknown config argument {key!r}; known: {", ".join(defaults)}')
    default = defaults[key]
    if not sep:
      result[key] = True
    elif isinstance(default, bool):
      result[key] = value.lower() in ('1', 'true', 'yes')
    elif default is None:
      result[key] = value
    else:
      result[key] = type(default)(value)
  return result

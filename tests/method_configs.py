"""Tiny configs for every registered loss, for tests that must cover them all."""

import importlib.util

from conftest import REPO


def tiny_config(loss_name):
  """`configs/<loss>.py:runlocal` when that file exists, else the demo's with the loss swapped."""
  path = REPO / 'configs' / f'{loss_name}.py'
  if not path.exists():
    path = REPO / 'configs' / 'demo.py'
  spec = importlib.util.spec_from_file_location(f'config_{path.stem}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config('runlocal')
  if config.loss.name != loss_name:
    config.loss.name = loss_name
  return config

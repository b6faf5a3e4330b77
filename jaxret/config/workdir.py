"""The config as saved in the workdir (`DIR/config.json`), for modes run without --config."""

import json
import os

import ml_collections

from jaxret import errors

FILENAME = 'config.json'


def save(config, workdir):
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, FILENAME)
  with open(path + '.tmp', 'w') as f:
    f.write(config.to_json_best_effort(indent=2, sort_keys=True))
  os.replace(path + '.tmp', path)  # Atomic: never a half-written config.


def _tuples(value):
  """JSON turns tuples into lists; configs use tuples for sequences."""
  if isinstance(value, dict):
    return {k: _tuples(v) for k, v in value.items()}
  if isinstance(value, list):
    return tuple(_tuples(v) for v in value)
  return value


def load(workdir):
  path = os.path.join(workdir, FILENAME)
  if not os.path.exists(path):
    raise errors.UserError(f'no {FILENAME} in {workdir}: pass --config=configs/NAME.py, '
                           'or train in this workdir first')
  with open(path) as f:
    config = ml_collections.ConfigDict(_tuples(json.load(f)))
  config.lock()
  return config

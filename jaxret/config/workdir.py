"""The config as saved in the workdir (`DIR/config.json`), for modes run without --config."""

import os

import ml_collections

from jaxret import files

FILENAME = 'config.json'


def save(config, workdir):
  # Atomic: never a half-written config.
  with files.atomic_file(os.path.join(workdir, FILENAME)) as f:
    f.write(config.to_json_best_effort(indent=2, sort_keys=True))


def _tuples(value):
  """JSON turns tuples into lists; configs use tuples for sequences."""
  if isinstance(value, dict):
    return {k: _tuples(v) for k, v in value.items()}
  if isinstance(value, list):
    return tuple(_tuples(v) for v in value)
  return value


def load(workdir):
  saved = files.read_json(os.path.join(workdir, FILENAME),
                          f'no {FILENAME} in {workdir}: pass --config=configs/NAME.py, '
                          'or train in this workdir first')
  config = ml_collections.ConfigDict(_tuples(saved))
  config.lock()
  return config

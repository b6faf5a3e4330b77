"""Atomic writes: a reader sees the old file (or folder) or the new one, never half of one.

Every file or folder jaxret replaces in a workdir or an index goes through here:
the new content is written beside the target under a name unique to this process
and thread, then renamed over it (`os.replace` is atomic on POSIX). A failure
part-way removes the partial copy and leaves the target as it was. `read_json`
reads such a JSON file back, refusing a missing one in one line.
"""

import contextlib
import json
import os
import shutil
import threading

from jaxret import errors


def _private(path, tag):
  return f'{path}.{tag}-{os.getpid()}-{threading.get_ident()}'


@contextlib.contextmanager
def atomic_file(path, mode='w'):
  """`with atomic_file(path, 'wb') as f:` writes `f` in place of `path` once the block ends."""
  parent = os.path.dirname(path)
  if parent:
    os.makedirs(parent, exist_ok=True)
  partial = _private(path, 'tmp')
  try:
    with open(partial, mode) as f:
      yield f
    os.replace(partial, path)
  finally:
    if os.path.exists(partial):
      os.remove(partial)


def write_json(path, payload, **dump_options):
  with atomic_file(path) as f:
    json.dump(payload, f, **dump_options)


def read_json(path, missing):
  """The JSON value in `path`; `errors.UserError(missing)` where there is no such file."""
  if not os.path.isfile(path):
    raise errors.UserError(missing)
  with open(path) as f:
    return json.load(f)


def write_bytes(path, data):
  with atomic_file(path, 'wb') as f:
    f.write(data)


@contextlib.contextmanager
def staged_directory(out_dir):
  """`with staged_directory(out_dir) as staging:` fills `staging`, which then replaces
  `out_dir` whole; the old folder is removed only once the new one is in place."""
  staging = _private(out_dir, 'tmp')
  shutil.rmtree(staging, ignore_errors=True)
  os.makedirs(staging)
  try:
    yield staging
    previous = _private(out_dir, 'old')
    if os.path.exists(out_dir):
      os.replace(out_dir, previous)
    os.replace(staging, out_dir)
    shutil.rmtree(previous, ignore_errors=True)
  finally:
    shutil.rmtree(staging, ignore_errors=True)

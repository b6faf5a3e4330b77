"""Atomic writes: a failed write leaves the old file or folder as it was, with nothing beside it."""

import os

import pytest

from jaxret import errors
from jaxret import files


class _Interrupted(Exception):
  pass


def _listing(folder):
  return sorted(os.listdir(folder))


def _read(path):
  with open(path, 'rb') as f:
    return f.read()


def test_atomic_file_replaces_the_target(tmp_path):
  path = str(tmp_path / 'sub' / 'out.txt')
  files.write_bytes(path, b'old')
  with files.atomic_file(path) as f:
    f.write('new')
  assert _read(path) == b'new'
  assert _listing(tmp_path / 'sub') == ['out.txt']


def test_write_json_replaces_the_target(tmp_path):
  path = str(tmp_path / 'out.json')
  files.write_json(path, {'b': 1, 'a': 2}, sort_keys=True)
  files.write_json(path, {'b': 3}, sort_keys=True)
  assert _read(path) == b'{"b": 3}'
  assert _listing(tmp_path) == ['out.json']


def test_failed_atomic_file_keeps_the_old_file(tmp_path):
  path = str(tmp_path / 'out.txt')
  files.write_bytes(path, b'old')
  with pytest.raises(_Interrupted):
    with files.atomic_file(path) as f:
      f.write('half of the new')
      raise _Interrupted()
  assert _read(path) == b'old'
  assert _listing(tmp_path) == ['out.txt']


def test_failed_atomic_file_creates_nothing(tmp_path):
  with pytest.raises(_Interrupted):
    with files.atomic_file(str(tmp_path / 'out.txt'), 'wb') as f:
      f.write(b'half')
      raise _Interrupted()
  assert not _listing(tmp_path)


def test_staged_directory_replaces_the_folder(tmp_path):
  out_dir = str(tmp_path / 'index')
  with files.staged_directory(out_dir) as staging:
    files.write_bytes(os.path.join(staging, 'old.bin'), b'old')
  with files.staged_directory(out_dir) as staging:
    assert not os.listdir(staging)  # Starts empty, not from the old folder.
    files.write_bytes(os.path.join(staging, 'new.bin'), b'new')
  assert _listing(out_dir) == ['new.bin']
  assert _listing(tmp_path) == ['index']


def test_failed_staged_directory_keeps_the_old_folder(tmp_path):
  out_dir = str(tmp_path / 'index')
  with files.staged_directory(out_dir) as staging:
    files.write_bytes(os.path.join(staging, 'old.bin'), b'old')
  with pytest.raises(_Interrupted):
    with files.staged_directory(out_dir) as staging:
      files.write_bytes(os.path.join(staging, 'new.bin'), b'new')
      raise _Interrupted()
  assert _listing(out_dir) == ['old.bin']
  assert _read(os.path.join(out_dir, 'old.bin')) == b'old'
  assert _listing(tmp_path) == ['index']


def test_failed_staged_directory_creates_nothing(tmp_path):
  with pytest.raises(_Interrupted):
    with files.staged_directory(str(tmp_path / 'index')) as staging:
      files.write_bytes(os.path.join(staging, 'new.bin'), b'new')
      raise _Interrupted()
  assert not _listing(tmp_path)


def test_read_json_reads_what_write_json_wrote(tmp_path):
  path = str(tmp_path / 'out.json')
  files.write_json(path, {'a': [1, 2]})
  assert files.read_json(path, 'no such file') == {'a': [1, 2]}


def test_read_json_refuses_a_missing_file_in_one_line(tmp_path):
  with pytest.raises(errors.UserError, match='^no manifest here; build it first$'):
    files.read_json(str(tmp_path / 'missing.json'), 'no manifest here; build it first')

"""Tiny configs for every registered loss, for tests that must cover them all."""

import atexit
import functools
import shutil
import tempfile

from conftest import REPO
from jaxret.config import config_file


def load_config(name, arg):
  path = REPO / 'configs' / f'{name}.py'
  return config_file.load(path).get_config(arg)


@functools.lru_cache(maxsize=None)
def teacher_workdir():
  """A slow-model workdir (runlocal, one step) to distil from."""
  from jaxret.train import trainer  # pylint: disable=import-outside-toplevel
  workdir = tempfile.mkdtemp(prefix='jaxret-teacher-')
  atexit.register(shutil.rmtree, workdir, ignore_errors=True)  # Removed when the process ends.
  config = load_config('caption', 'runlocal')
  config.total_steps, config.eval_every, config.log_every = 1, 0, 1
  trainer.train(config, workdir)
  return workdir


def tiny_config(loss_name):
  """`configs/<loss>.py:runlocal`: every method's config file is named after it."""
  name = loss_name
  arg = 'runlocal'
  if loss_name == 'distill':
    arg += f',slow={teacher_workdir()}'
  config = load_config(name, arg)
  assert config.loss.name == loss_name, (name, config.loss.name)
  return config

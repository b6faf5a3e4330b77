r"""The config saved in a workdir (`DIR/config.json`), to run a mode with some keys changed.

  python -m jaxret.main --mode=eval --workdir=/tmp/jaxret-demo \
      --config=configs/workdir.py:/tmp/jaxret-demo --config.eval.split=val
  python -m jaxret.main --mode=train --workdir=/tmp/jaxret-demo \
      --config=configs/workdir.py:/tmp/jaxret-demo --config.total_steps=700

The argument is the workdir whose config to start from (usually the same as
--workdir). Without --config, the modes other than train and demo read
DIR/config.json unchanged; this file is for when a key must differ (another
split, a longer run, another index method), since overrides need a config.
"""

from jaxret import errors
from jaxret.config import workdir


def get_config(arg=None):
  if not arg:
    raise errors.UserError('configs/workdir.py needs the workdir after a colon, e.g. '
                           '--config=configs/workdir.py:/tmp/jaxret-demo')
  return workdir.load(arg)

"""Training the workdirs a study needs, or reusing them when they are done."""

import os
import subprocess
import sys
import time

from jaxret.inference import checkpoints


def trained(workdir, steps):
  """True when `workdir` holds the checkpoint of its last step."""
  return os.path.isdir(os.path.join(checkpoints.directory(workdir), str(steps)))


def train(workdir, config, steps, *overrides):
  """`--mode=train` of `workdir` with `config` (a configs/ file and its argument) for
  `steps` steps, unless the workdir already holds that step's checkpoint."""
  if trained(workdir, steps):
    print(f'reusing {workdir}', flush=True)
    return
  print(f'training {workdir}', flush=True)
  start = time.time()
  subprocess.run([sys.executable, '-m', 'jaxret.main', '--mode=train', f'--config={config}',
                  f'--workdir={workdir}', f'--config.total_steps={steps}', *overrides],
                 check=True)
  print(f'trained {workdir} in {time.time() - start:.0f}s', flush=True)

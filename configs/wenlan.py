r"""WenLan/BriVL on the built-in data: MoCo across modalities, two momentum key
encoders and two queues, on the demo's dual encoder.

  python -m jaxret.main --mode=demo --config=configs/wenlan.py --workdir=/tmp/jaxret-wenlan

Result on the built-in test split (500 images, 2,500 captions): text→image
R@1 24.3, R@5 72.8, R@10 91.6; image→text R@1 26.8 (350 steps, measured with
queues that started empty, `--config.loss.queue_init=empty`): below CLIP's
27.2. Why: the queued keys come from a momentum encoder (m = 0.99) that lags
the fast-changing encoder of a 350-step run, so most negatives are stale (the
temperature is not the cause: CLIP's learned scale ends at 16.6, T = 0.06);
BriVL's gains come from very large negative sets over long training, which a
short run on 20,000 images cannot show.

Arguments (`configs/wenlan.py:runlocal,steps=50`):
  runlocal: a seconds-long smoke run (tiny model, few steps, small splits).
  steps: number of training steps (default from the mode).
  paper: BriVL's queue of 9600 instead of 4096.
"""

import ml_collections

from jaxret.config import args as args_lib
from jaxret.config import config_file

demo = config_file.sibling(__file__, 'demo')


def get_config(arg=None):
  arg = args_lib.parse_arg(arg, runlocal=False, steps=0, paper=False)
  config = demo.get_config('runlocal' if arg.runlocal else None)
  if arg.steps:
    config.total_steps = arg.steps
  config.loss = ml_collections.ConfigDict()
  config.loss.name = 'wenlan'
  # BriVL's 9600 keys are 75 batches here, up to 75 steps old in a 350-step
  # run; 4096 (32 batches) keeps the queued keys close to the current encoder.
  config.loss.queue_size = 9600 if arg.paper else 256 if arg.runlocal else 4096
  config.loss.momentum = 0.99  # BriVL's.
  config.loss.temperature = 0.07  # Fixed, as in BriVL.
  config.loss.exclude_same_id = True
  # The queues start with random unit keys, negatives from the first step (MoCo,
  # BriVL); 'empty' leaves unwritten slots out, so the first step's loss is 0.
  config.loss.queue_init = 'random'
  return config

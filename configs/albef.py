r"""ALBEF on the built-in data: ITC with queues and momentum distillation, ITM, MLM.

  python -m jaxret.main --mode=demo --config=configs/albef.py --workdir=/tmp/jaxret-albef

The demo's towers (4-block ViT on 64x64 images with 8x8 patches, 3-block
text transformer, both 128 wide, 128-d joint space) plus a 1-block fusion
encoder (text self-attention, cross-attention to the image tokens) with ITM
and MLM heads; momentum copies of everything, image and text queues with
image ids. Retrieval (eval, export, index, query) uses the ITC embeddings.

Result on the built-in test split (500 images, 2,500 captions), ITC retrieval:
text→image R@1 22.0, R@5 65.7, R@10 85.3; image→text R@1 18.6 (350 steps):
below CLIP's 27.2. Why: the same towers share 350 steps between ITC, ITM and
MLM, and the momentum-distilled ITC targets come from an EMA model that lags
the encoder over so short a run; ALBEF's ITC is a shortlist for its ITM head,
which re-ranks it (docs/fast_slow.md compares that head with the
captioning score).

Arguments (`configs/albef.py:runlocal,steps=50`):
  runlocal: a seconds-long smoke run (tiny model, few steps, small splits).
  steps: number of training steps (default from the mode).
  paper: ALBEF's queue of 65536 and momentum 0.995 instead of the values
    adapted to a few hundred steps (see the comment in `get_config`).
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

  config.model.name = 'albef'
  config.model.fusion = ml_collections.ConfigDict(
      {'variant': config.model.text.variant, 'depth': 1})
  config.model.temperature = 0.07  # ALBEF's init; clamped to [0.001, 0.5].

  pairs_per_epoch = config.data.num_train * config.data.captions_per_image
  config.loss = ml_collections.ConfigDict()
  config.loss.name = 'albef'
  # ALBEF trains tens of thousands of steps with a queue of 65536 and m = 0.995.
  # In a 350-step run an EMA with m = 0.995 still holds 0.995^350 = 17% of the
  # random initialisation at the end (m = 0.99: 3%), and a queue of 65536
  # would hold keys of encoders hundreds of steps old: the built-in run
  # uses m = 0.99 (BriVL's) and 32 batches of keys.
  if arg.paper:
    config.loss.queue_size, config.loss.momentum = 65536, 0.995
  else:
    config.loss.queue_size = 256 if arg.runlocal else 4096
    config.loss.momentum = 0.99
  config.loss.alpha = 0.4
  config.loss.alpha_warmup_steps = pairs_per_epoch // config.batch_size  # One epoch.
  config.loss.itm_weight = 1.0
  config.loss.mlm_weight = 1.0
  config.loss.mlm_probability = 0.15  # The mask id is the tokenizer's [MASK].
  return config

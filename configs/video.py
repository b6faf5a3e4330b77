r"""Text-to-video retrieval on the built-in clips: any method's config, with a video tower.

  python -m jaxret.main --mode=demo --config=configs/video.py --workdir=/tmp/jaxret-video
  python -m jaxret.main --mode=train --config=configs/video.py:temporal=mean --workdir=...

The built-in video data (`jaxret/data/builtin/video.py`): 8-frame 64x64 clips
of one to three shapes that move, appear, disappear or change colour, captions
such as "a red circle moves left, then a blue square appears"; the val and
test galleries are groups of four temporal near-duplicates (the clip, its
frames reversed, its two events swapped, that one reversed). The image tower
becomes the video tower (`jaxret/models/video.py`): the ViT on every frame
(shared weights), a time embedding per frame, then `temporal`: 'transformer'
(a one-block transformer over the frame vectors, the default) or 'mean' (the
order-blind baseline). The method's model, loss and evaluator are those of
`configs/<method>.py` (clip, siglip, filip, wenlan; caption: the slow
captioner, cross-attending the space-time tokens; distill: Thinking Fast and
Slow, the dual encoder distilled from a video captioner `slow=DIR` and
evaluated against it and re-ranked by it, as `configs/distill.py`); only the
data and the image tower change. Evaluation: text→video and video→text Recall@1/5/10 and median
rank (`t2i_*`, `i2t_*` in the results: "image" is the clip).

Result (docs/video.md): the temporal transformer against mean pooling on the
test gallery's near-duplicates.

Arguments (`configs/video.py:runlocal,method=filip,temporal=mean,steps=50`):
  runlocal: a seconds-long smoke run (tiny model, few steps, small splits).
  steps: number of training steps (default from the mode).
  method: the config file whose model and loss are used (default clip).
  temporal: 'transformer' (default) or 'mean'.
  frames: frames per clip (default 8).
  groups: train on groups of four temporal near-duplicates, batched together
    (default False: random train clips). Best as a second stage, after random
    clips: docs/video.md, benchmarks/video_temporal.py.
  slow, fast, candidates: method=distill only (configs/distill.py's): the video
    captioner's workdir (default /tmp/jaxret-video-slow), the undistilled video
    dual encoder's ('' leaves its row out), how B_i is chosen.
"""

import ml_collections

from jaxret.config import args as args_lib
from jaxret.config import config_file

METHODS = ('clip', 'siglip', 'filip', 'wenlan', 'caption', 'distill')


def get_config(arg=None):
  arg = args_lib.parse_arg(arg, runlocal=False, steps=0, method='clip', temporal='transformer',
                           frames=8, groups=False, slow='/tmp/jaxret-video-slow', fast='',
                           candidates='random')
  if arg.method not in METHODS:
    raise ValueError(f'unknown method {arg.method!r}; known: {", ".join(METHODS)}')
  base_arg = ','.join((['runlocal'] if arg.runlocal else [])
                      + ([f'steps={arg.steps}'] if arg.steps else [])
                      + ([f'slow={arg.slow},fast={arg.fast},candidates={arg.candidates}']
                         if arg.method == 'distill' else []))
  config = config_file.sibling(__file__, arg.method).get_config(base_arg or None)
  config.batch_size = 32 if arg.runlocal else 64
  config.total_steps = arg.steps or (4 if arg.runlocal else 600)
  config.optimizer.warmup_steps = 1 if arg.runlocal else 50

  config.data.source = 'builtin_video'
  # groups=True: train clips in groups of near-duplicates too, batched group by group
  # (a batch's clips then differ in temporal order as well; docs/video.md measures it).
  config.data.group_batches = arg.groups
  config.data.num_frames = arg.frames
  config.data.num_train = 500 if arg.runlocal else 20000
  # Multiples of 4: groups of temporal near-duplicates.
  config.data.num_val = 16 if arg.runlocal else 200
  config.data.num_test = 32 if arg.runlocal else 400
  config.eval.batch_size = 16 if arg.runlocal else 64

  # The ViT on every frame (16x16 patches: 16 tokens a frame), then time.
  config.model.image = ml_collections.ConfigDict({
      'variant': 'mu/16' if arg.runlocal else 'nano/16', 'depth': 1 if arg.runlocal else 2,
      'pool': 'cls', 'posemb': 'learn',
      'temporal': arg.temporal, 'temporal_depth': 1, 'max_frames': 16})
  config.query.text = 'a red circle moves left, then a blue square appears'
  if arg.method == 'caption':  # Space-time tokens have no square grid to upsample.
    config.model.pyramid = 'coarse'
  else:
    config.model.text.depth = 1 if arg.runlocal else 2
  return config

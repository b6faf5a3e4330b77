r"""CLIP (Radford et al. 2021): the baseline every method in configs/ compares to.

  python -m jaxret.main --mode=demo --config=configs/clip.py --workdir=/tmp/jaxret-clip

The same run as configs/demo.py, under the method's name: a 4-block ViT
(64x64 images, 8x8 patches, CLS pooling) and a 3-block text transformer, both
128 wide, projected to 128-d unit vectors, trained for 350 steps of batch 128
with symmetric InfoNCE (`jaxret/losses/clip.py`): learnable logit scale
initialised to 1/0.07 and clamped at 100, no weight decay on it, positives by
image id (two captions of one image in a batch are not negatives), every
device's rows against every device's columns (passed around the ring).

Result on the built-in test split (500 images, 2,500 captions):
text→image R@1 27.2, R@5 76.3, R@10 94.2; image→text R@1 27.8 (350 steps).

Arguments (`configs/clip.py:runlocal,steps=50`): those of configs/demo.py
(runlocal, steps, batch, microbatches). A batch of 16,384 pairs in chunks of
64 rows (gradient caching, docs/scaling.md), on one CPU device:

  python -m jaxret.main --mode=train --workdir=/tmp/jaxret-giant \
      --config=configs/clip.py:runlocal,steps=3,batch=16384,microbatches=256
"""

from jaxret.config import config_file

demo = config_file.sibling(__file__, 'demo')


def get_config(arg=None):
  config = demo.get_config(arg)
  config.loss.name = 'clip'
  return config

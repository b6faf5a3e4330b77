r"""IRT (El-Nouby et al. 2021) for image-to-image retrieval: labels instead of captions.

  python -m jaxret.main --mode=train --config=configs/irt_image.py --workdir=/tmp/jaxret-irt-image
  python -m jaxret.main --mode=eval --workdir=/tmp/jaxret-irt-image

Only the image tower (ViT nano/8 of configs/clip.py, CLS pooling, 128-d unit
descriptors) is trained, with IRT's objective (`jaxret/losses/irt.py`,
`irt_image_loss`): Σ_pos (1 − s) + Σ_neg [s > β] s over the pairs of the
global batch and of the batch against the cross-batch memory (β = 0.5; the
pair of an image with itself, in the batch or in the memory, excluded),
divided by the number of anchors, plus λ times the differential-entropy
(KoLeo) regulariser. Labels: an image's class is its scene key (the whole
description; `jaxret/objectives/labels.py`), so the images of a class are
renderings of one description that differ by jitter in place, size and colour.

Evaluation (`eval.task = 'image_image'`, `jaxret/evaluate/image_retrieval.py`):
the split's scenes rendered `eval.views` = 2 times (the split's image and a
fresh rendering); every image queries all the others; Recall@K counts the other
rendering of its scene in the top K, against the split's near-duplicate scenes
(one attribute or relation apart). The text metrics are computed too (the text
tower is untrained: near chance); there is no text query for this model, so
run train and eval (and export), not demo. `--config.export.pca_dim=D` adds
PCA-reduced descriptors to the export.

Result on the built-in test split (500 scenes x 2 renderings):
image→image R@1 2.8, R@5 7.8, R@10 12.7 (chance R@1 0.1%; 350 steps). The
other rendering of a scene competes with near-duplicates one attribute apart,
and only scenes that repeat in the training split (mostly one-object scenes)
give positive pairs, so 350 steps of labels teach little of the two- and
three-object compositions the test split is made of.

Arguments (`configs/irt_image.py:runlocal,steps=50,pool=gem`): those of
configs/irt.py.
"""

from jaxret.config import config_file

demo = config_file.sibling(__file__, 'demo')
irt = config_file.sibling(__file__, 'irt')


def get_config(arg=None):
  arg = irt.parse_arg(arg)
  config = demo.get_config(f'runlocal={arg.runlocal},steps={arg.steps}')
  config.model.image.pool = irt.image_pool(arg.pool)
  config.loss = irt.irt_loss(arg.runlocal, name='irt_image')
  config.loss.labels = 'builtin_scene'
  # The data whose training split the labels describe: the same ConfigDict as
  # config.data, so --config.data.* overrides reach the labels too.
  config.loss.data = config.data
  config.eval.task = 'image_image'
  config.eval.views = 2  # Renderings of each scene in the evaluation gallery.
  config.index.texts = False  # The text tower is untrained: no captions to search.
  return config

"""Class labels of images, for objectives trained on labels instead of captions.

The input pipeline gives each example its image's row in the training split
(`image_id`); a label table maps rows to classes.

`builtin_scene`: on the built-in data an image's class is its scene key (the
full description: layout, objects with size, colour and shape, position).
Images of one class are different renderings of the same description, which
differ in the jitter of place, size and colour, as photos of one object do.
Single-object scenes repeat often in the training split, two-object scenes
sometimes, three-object scenes rarely (those are negatives only).
"""

import numpy as np

from jaxret import errors
from jaxret.data.builtin import dataset

KINDS = ('builtin_scene',)


def scene_labels(scenes):
  """(N,) int32 class of each scene: equal keys, equal labels (numbered by sorted key)."""
  _, labels = np.unique([scene.key for scene in scenes], return_inverse=True)
  return labels.astype(np.int32).reshape(-1)


def split_labels(kind, data_config, split):
  """(N,) int32 label of every row of `split`."""
  if kind != 'builtin_scene':
    raise errors.UserError(f'unknown label kind {kind!r}; known: {", ".join(KINDS)}')
  if data_config.source != 'builtin':
    raise errors.UserError(f'labels {kind!r} need data.source="builtin", '
                           f'not {data_config.source!r}')
  return scene_labels(dataset.scenes_of_split(data_config, split))

"""Image-to-image retrieval on the built-in data: labels instead of captions.

The gallery is every scene of a split rendered `config.eval.views` times: view
0 is the split's own image and the others are fresh renderings of the same
scene with other random streams (another jitter of place, size and colour). A
scene is a label. Every image queries all the others, and Recall@K counts a
query as right when another view of its scene is among its top K; the
near-duplicate groups of the val and test splits (one attribute or relation
apart) are the hard negatives.
"""

import numpy as np

from jaxret import errors
from jaxret.data import sources
from jaxret.data.builtin import dataset
from jaxret.data.builtin import render
from jaxret.evaluate import embed
from jaxret.evaluate import recall

# Random streams of the extra views; the dataset's own streams are 0, 1 and 2.
VIEW_STREAM = 100


def multiview_gallery(data_config, split, views, records=None):
  """(images (views·N, H, W, 3) uint8, labels (views·N,)): view v of scene i is row v·N + i."""
  if data_config.source != 'builtin':
    raise errors.UserError('image-to-image evaluation renders extra views of the built-in '
                           f'data; data.source={data_config.source!r} has none')
  if views < 2:
    raise errors.UserError(f'eval.views={views}: image-to-image retrieval needs at least 2 '
                           'views per scene (a query must have another view to find)')
  scenes = dataset.scenes_of_split(data_config, split)
  records = sources.load_split(data_config, split) if records is None else records
  images = [np.asarray(records.images)]
  for view in range(1, views):
    images.append(np.stack([
        render.render(scene, np.random.default_rng(
            [data_config.seed, dataset.SPLITS.index(split), i, VIEW_STREAM + view]),
                      data_config.image_size)
        for i, scene in enumerate(scenes)]))
  return np.concatenate(images), np.tile(np.arange(len(scenes)), views)


class ImageRetrievalEvaluator:
  """Image→image Recall@K (`recall.label_retrieval_metrics`) on one split."""

  def __init__(self, model, mesh, config, split, records=None):
    self.images, self.labels = multiview_gallery(config.data, split, config.eval.views, records)
    self.embedder = embed.Embedder(model, mesh, config.eval.batch_size, config.data)

  def summary(self):
    """Gallery size and chance R@1 (every query has views − 1 right answers)."""
    count = len(self.labels)
    right = count // len(np.unique(self.labels)) - 1
    return {'num_i2i_images': count, 'chance_i2i_R1': right / (count - 1)}

  def __call__(self, params):
    return recall.label_retrieval_metrics(self.embedder.images(params, self.images), self.labels)

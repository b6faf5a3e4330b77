"""The built-in dataset: generated images and captions, split by image.

Deterministic for a seed, and per image: image i of a split is drawn from its
own random stream, so any image can be rendered on its own, in any order. The
val and test splits are groups of near-duplicate scenes (one attribute or one
relation apart) with all scene keys distinct, so each of their captions has
exactly one right image; train scenes are random and never share a key with
val or test. Train images are rendered on access (in the input pipeline's
threads), so start-up does not wait for them.
"""

import abc

import numpy as np

from jaxret.data import options as options_lib
from jaxret.data import records
from jaxret.data.builtin import captions as captions_lib
from jaxret.data.builtin import render
from jaxret.data.builtin import scenes as scenes_lib

SPLITS = ('train', 'val', 'test')
# Offsets keep image ids distinct across splits.
ID_OFFSET = {'train': 0, 'val': 10_000_000, 'test': 20_000_000}
STREAMS = {'scenes': 0, 'captions': 1, 'image': 2}


def stream_rng(data_config, split, index, stream):
  """Item `index`'s random stream number `stream` in `split`; train item 0 is the
  generator's item `data.first_train_image`."""
  if split == 'train':
    index += options_lib.get(data_config, 'first_train_image')
  return np.random.default_rng([data_config.seed, SPLITS.index(split), index, stream])


def first_id(data_config, split):
  """The image id of `split`'s first item (train ids follow `data.first_train_image`)."""
  first = options_lib.get(data_config, 'first_train_image') if split == 'train' else 0
  return ID_OFFSET[split] + first


def _rng(data_config, split, index, stream):
  return stream_rng(data_config, split, index, STREAMS[stream])


def _held_out(data_config):
  """The val and test (scenes, groups) (test avoids val's keys)."""
  held_out = {}
  for split in ('val', 'test'):
    held_out[split] = scenes_lib.grouped_scenes(
        _rng(data_config, split, 0, 'scenes'), data_config[f'num_{split}'],
        data_config.near_duplicates_per_group,
        exclude={s.key for scenes, _ in held_out.values() for s in scenes})
  return held_out


def scenes_of_split(data_config, split):
  return grouped_scenes_of_split(data_config, split)[0]


def grouped_scenes_of_split(data_config, split):
  """(scenes, near-duplicate group per scene, or None). Train scenes are random, or in
  near-duplicate groups too with `data.group_batches` (batches of whole groups)."""
  if split not in SPLITS:
    raise ValueError(f'unknown split {split!r}; the built-in data has {SPLITS}')
  held_out = _held_out(data_config)
  if split != 'train':
    scenes, groups = held_out[split]
    return scenes, np.asarray(groups)
  exclude = {s.key for scenes, _ in held_out.values() for s in scenes}
  if options_lib.resolve(data_config).group_batches:
    scenes, groups = scenes_lib.grouped_scenes(
        _rng(data_config, split, 0, 'scenes'), data_config.num_train,
        data_config.near_duplicates_per_group, exclude)
    return scenes, np.asarray(groups)
  return [scenes_lib.random_scenes(_rng(data_config, split, i, 'scenes'), 1, exclude)[0]
          for i in range(data_config.num_train)], None


def items_of_split(data_config, split, held_out, key, train_item, name):
  """A built-in dataset's items of `split`: val and test from `held_out(data_config)`, train
  item i from `train_item(i, exclude)`, `exclude` the held-out items' `key`s (so no train
  item shares a key with val or test); `name` the dataset, for the error."""
  if split not in SPLITS:
    raise ValueError(f'unknown split {split!r}; {name} has {SPLITS}')
  held = held_out(data_config)
  if split != 'train':
    return held[split]
  exclude = {key(item) for items in held.values() for item in items}
  return [train_item(i, exclude) for i in range(data_config.num_train)]


class RenderedArray(abc.ABC):
  """A read-only uint8 array of `shape` whose rows render on access (numpy indexing)."""

  shape: tuple

  @abc.abstractmethod
  def __len__(self):
    """The number of rows."""

  @abc.abstractmethod
  def render(self, index):
    """Row `index` as a uint8 array of shape `shape[1:]`."""

  def __getitem__(self, index):
    if isinstance(index, (int, np.integer)):
      return self.render(int(index))
    rows = np.arange(len(self))[index]
    return np.stack([self.render(int(i)) for i in rows]) if len(rows) else np.zeros(
        (0,) + self.shape[1:], np.uint8)

  def __array__(self, dtype=None, copy=None):
    del copy
    return self[:].astype(dtype) if dtype is not None else self[:]


class RenderedImages(RenderedArray):
  """A split's images as a read-only array that renders on access (numpy indexing)."""

  def __init__(self, scenes, data_config, split):
    self.scenes = scenes
    self.data_config = data_config
    self.split = split
    size = data_config.image_size
    self.shape = (len(scenes), size, size, 3)
    self.dtype = np.dtype(np.uint8)

  def __len__(self):
    return len(self.scenes)

  def render(self, index):
    return render.render(self.scenes[index], _rng(self.data_config, self.split, index, 'image'),
                         self.data_config.image_size)


def load_split(data_config, split):
  """`records.Records` of `split`; train images render lazily, val/test ones at once."""
  scenes, groups = grouped_scenes_of_split(data_config, split)
  texts = [captions_lib.captions(s, _rng(data_config, split, i, 'captions'),
                                 data_config.captions_per_image) for i, s in enumerate(scenes)]
  images = RenderedImages(scenes, data_config, split)
  if split != 'train':
    images = images[:]
  ids = first_id(data_config, split) + np.arange(len(scenes), dtype=np.int64)
  metadata = [{'layout': s.layout, 'objects': len(s.objects), 'colour': s.objects[0].colour,
               'shape': s.objects[0].shape} for s in scenes]
  return records.Records(images=images, image_ids=ids, captions=texts, metadata=metadata,
                         groups=groups)

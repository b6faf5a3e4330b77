"""The built-in dataset: determinism, disjoint splits, unique test scenes, near-duplicates."""

import collections

import ml_collections
import numpy as np
import pytest

from jaxret import errors
from jaxret.data import options as data_options
from jaxret.data.builtin import captions as captions_lib
from jaxret.data.builtin import dataset
from jaxret.data.builtin import scenes as scenes_lib

CONFIG = ml_collections.ConfigDict(dict(
    seed=3, num_train=300, num_val=40, num_test=80, image_size=32, captions_per_image=5,
    near_duplicates_per_group=4))


@pytest.fixture(scope='module')
def splits():
  return {split: dataset.load_split(CONFIG, split) for split in dataset.SPLITS}


def test_deterministic_for_a_seed(splits):
  again = dataset.load_split(CONFIG, 'test')
  np.testing.assert_array_equal(again.images, splits['test'].images)
  assert again.captions == splits['test'].captions
  other = ml_collections.ConfigDict(CONFIG.to_dict())
  other.seed = 4
  assert dataset.load_split(other, 'test').captions != splits['test'].captions


def test_shapes_and_counts(splits):
  for split, records in splits.items():
    assert records.images.shape == (CONFIG[f'num_{split}'], 32, 32, 3)
    assert records.images.dtype == np.uint8
    assert all(len(c) == 5 and len(set(c)) == 5 for c in records.captions)


def test_splits_are_disjoint_by_image_and_by_scene(splits):
  ids = [set(r.image_ids.tolist()) for r in splits.values()]
  assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
  keys = {split: {s.key for s in dataset.scenes_of_split(CONFIG, split)}
          for split in dataset.SPLITS}
  assert not keys['train'] & keys['test'] and not keys['train'] & keys['val']
  assert not keys['val'] & keys['test']


def test_every_test_caption_has_exactly_one_right_image():
  scenes = dataset.scenes_of_split(CONFIG, 'test')
  keys = [s.key for s in scenes]
  assert len(set(keys)) == len(keys)
  # A caption names every attribute: no caption of one scene fits another scene.
  rng = np.random.default_rng(0)
  caption_owner = collections.defaultdict(set)
  for index, scene in enumerate(scenes):
    for caption in captions_lib.captions(scene, rng, count=6):
      caption_owner[caption].add(index)
  assert all(len(owners) == 1 for owners in caption_owner.values())


def _differences(a, b):
  """Number of one-step changes between two scenes of the same layout (0 if same)."""
  if a.layout != b.layout or len(a.objects) != len(b.objects):
    return None
  return sum(x != y for x, y in zip(a.objects, b.objects)) + (a.position != b.position)


def test_test_split_has_near_duplicates_a_bag_of_words_cannot_separate():
  scenes = dataset.scenes_of_split(CONFIG, 'test')
  variants = {s.key: {v.key for v in scenes_lib.one_change_variants(s)} for s in scenes}
  keys = {s.key for s in scenes}
  with_neighbour = sum(bool(variants[s.key] & keys) for s in scenes)
  assert with_neighbour >= 0.9 * len(scenes)
  # Some pairs are swaps: same objects (so the same words), different order.
  swaps = sum(1 for i, a in enumerate(scenes) for b in scenes[i + 1:]
              if a.layout == b.layout and sorted(a.objects, key=str) == sorted(b.objects, key=str)
              and a.objects != b.objects)
  assert swaps > 0


def test_one_change_variants_differ_by_one_thing():
  rng = np.random.default_rng(1)
  for _ in range(20):
    scene = scenes_lib.sample_scene(rng)
    for variant in scenes_lib.one_change_variants(scene):
      assert variant.key != scene.key
      diff = _differences(scene, variant)
      swapped = sorted(scene.objects, key=str) == sorted(variant.objects, key=str)
      assert diff == 1 or swapped


def test_images_show_the_described_colour():
  """A lone red object puts strongly red pixels into the image; a blue one does not."""
  rng = np.random.default_rng(0)
  red = scenes_lib.Scene('single', (scenes_lib.Obj('large', 'red', 'square'),), 'center')
  blue = scenes_lib.Scene('single', (scenes_lib.Obj('large', 'blue', 'square'),), 'center')
  from jaxret.data.builtin import render  # pylint: disable=import-outside-toplevel
  def reddish(image):
    image = image.astype(int)
    return np.sum((image[..., 0] > 150) & (image[..., 2] < 100))
  assert reddish(render.render(red, rng)) > 200
  assert reddish(render.render(blue, rng)) == 0


def test_grouped_train_split_and_batches_of_whole_groups():
  """data.group_batches: train scenes in near-duplicate groups, and an epoch order in
  which every round gives each image one caption, each group's images side by side."""
  from jaxret.data import pipeline  # pylint: disable=import-outside-toplevel
  config = ml_collections.ConfigDict({**CONFIG.to_dict(), 'group_batches': True})
  train = dataset.load_split(config, 'train')
  assert len(train) == CONFIG.num_train and train.groups is not None
  scenes = dataset.scenes_of_split(config, 'train')
  for group in np.unique(train.groups):  # Each group: a base scene and one-change variants.
    members = [scenes[i] for i in np.flatnonzero(train.groups == group)]
    variants = {v.key for v in scenes_lib.one_change_variants(members[0])}
    assert all(m.key in variants for m in members[1:])
  image_index, _ = train.pairs()
  order = pipeline.grouped_order(train.groups[image_index], image_index, seed=1)
  assert sorted(order.tolist()) == list(range(len(image_index)))
  rounds = np.split(order, 5)  # 5 captions per image: 5 rounds.
  for pairs in rounds:
    images = image_index[pairs]
    assert sorted(images.tolist()) == list(range(len(train)))  # Each image once.
    groups = train.groups[images]
    changes = np.count_nonzero(np.diff(groups)) + 1
    assert changes == len(np.unique(groups))  # Each group in one run.
  assert not np.array_equal(order, pipeline.grouped_order(train.groups[image_index],
                                                          image_index, seed=2))
  assert dataset.load_split(CONFIG, 'train').groups is None  # Random scenes by default.


def test_first_train_image_shifts_the_train_split_along_the_generator():
  """Train items from data.first_train_image on are the generator's items from there (a
  held-out teacher's images), ids included; val and test do not move."""
  shifted = ml_collections.ConfigDict({**CONFIG.to_dict(), 'first_train_image': 100,
                                       'num_train': 20})
  whole, part = dataset.load_split(CONFIG, 'train'), dataset.load_split(shifted, 'train')
  np.testing.assert_array_equal(part.images[:], whole.images[100:120])
  assert part.captions == whole.captions[100:120]
  np.testing.assert_array_equal(part.image_ids, whole.image_ids[100:120])
  assert part.captions != whole.captions[:20]
  assert dataset.load_split(shifted, 'test').captions == dataset.load_split(CONFIG,
                                                                            'test').captions


def test_first_train_image_is_checked():
  config = data_options.defaults()
  config.first_train_image = -1
  with pytest.raises(errors.UserError, match='first_train_image must be in'):
    data_options.check(config)
  config.first_train_image, config.source, config.path = 5, 'karpathy', '/data/k.json'
  with pytest.raises(errors.UserError, match='applies to the built-in data'):
    data_options.check(config)

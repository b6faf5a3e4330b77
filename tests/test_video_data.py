"""The built-in video data: determinism, shapes, captions in time order, and the test
gallery's temporal near-duplicates (a clip and its frames reversed are the same frames)."""

import ml_collections
import numpy as np
import pytest

from jaxret import errors
from jaxret.data import options as data_options
from jaxret.data import pipeline
from jaxret.data.builtin import clips as clips_lib
from jaxret.data.builtin import video
from jaxret.serve import contact_sheet

CONFIG = ml_collections.ConfigDict(dict(
    source='builtin_video', seed=3, num_train=60, num_val=8, num_test=16, num_frames=8,
    image_size=32, captions_per_image=5))


@pytest.fixture(scope='module')
def splits():
  return {split: video.load_split(CONFIG, split) for split in video.SPLITS}


def test_deterministic_for_a_seed(splits):
  again = video.load_split(CONFIG, 'test')
  np.testing.assert_array_equal(again.images, splits['test'].images)
  assert again.captions == splits['test'].captions
  other = ml_collections.ConfigDict(CONFIG.to_dict())
  other.seed = 4
  assert video.load_split(other, 'test').captions != splits['test'].captions


def test_shapes_counts_and_disjoint_keys(splits):
  for split, records in splits.items():
    assert records.images.shape == (CONFIG[f'num_{split}'], 8, 32, 32, 3)
    assert records.images.dtype == np.uint8
    assert all(len(c) == 5 and len(set(c)) == 5 for c in records.captions)
  keys = {split: [video.described(c, b).key for c, b in video.clips_of_split(CONFIG, split)]
          for split in video.SPLITS}
  held_out = keys['val'] + keys['test']
  assert len(set(held_out)) == len(held_out)  # One right clip per caption.
  assert not set(keys['train']) & set(held_out)
  # Lazily rendered train clips equal the ones rendered one by one.
  np.testing.assert_array_equal(splits['train'].images[[3, 5]][1], splits['train'].images[5])


def test_groups_are_temporal_near_duplicates(splits):
  test = splits['test']
  shown = video.clips_of_split(CONFIG, 'test')
  for start in range(0, len(shown), video.GROUP):
    (clip, forward), (same, backward), (swap, _), _ = shown[start:start + video.GROUP]
    assert same == clip and not forward and backward
    assert swap == clips_lib.swapped(clip) and swap.events != clip.events
    # Reversed: exactly the same frames, in the other order, so the same frame average.
    np.testing.assert_array_equal(test.images[start + 1], test.images[start][::-1])
    np.testing.assert_array_equal(test.images[start + 3], test.images[start + 2][::-1])
    assert not np.array_equal(test.images[start], test.images[start + 1])
    first, second = clip.events
    assert clip.objects[first.target] != clip.objects[second.target]


def _clip(*events, objects=(('red', 'circle'), ('blue', 'square'))):
  return clips_lib.Clip(objects=objects, starts=((20.0, 20.0), (40.0, 40.0)), events=events)


def test_grouped_train_split_batches_whole_groups_of_near_duplicates(splits):
  """With data.group_batches the train clips come in groups of four near-duplicates
  too (none sharing a held-out key), and a training batch holds whole groups."""
  config = ml_collections.ConfigDict({**CONFIG.to_dict(), 'group_batches': True})
  train = video.load_split(config, 'train')
  assert splits['train'].groups is None
  np.testing.assert_array_equal(train.groups, np.arange(60) // 4)
  shown = video.clips_of_split(config, 'train')
  for group in range(3):
    (base, b0), (reversed_base, b1), (swapped, b2), (reversed_swapped, b3) = shown[
        4 * group:4 * group + 4]
    assert (b0, b1, b2, b3) == (False, True, False, True)
    assert base == reversed_base and reversed_swapped == swapped == clips_lib.swapped(base)
    # The reversed clip is the same frames backwards.
    np.testing.assert_array_equal(train.images[4 * group + 1], train.images[4 * group][::-1])
  held_out = {video.described(*c).key for split in ('val', 'test')
              for c in video.clips_of_split(config, split)}
  assert not held_out & {video.described(*c).key for c in shown}
  # The epoch's order of the pairs (5 captions an image): every 8 pairs are two whole groups.
  images = np.repeat(np.arange(60), 5)
  order = pipeline.grouped_order(train.groups[images], images, seed=0)
  for batch in order[:40].reshape(5, 8):
    assert sorted(np.bincount(train.groups[images[batch]]).tolist())[-2:] == [4, 4]
    assert len(set(images[batch].tolist())) == 8
  with pytest.raises(ValueError, match=r'data.num_train \(with data.group_batches\) must be '
                                       r'a multiple of 4'):
    video.clips_of_split(ml_collections.ConfigDict({**config.to_dict(), 'num_train': 61}),
                         'train')


def test_reversal_undoes_each_event_in_the_opposite_order():
  clip = _clip(clips_lib.Event('move', 0, 'left'), clips_lib.Event('appear', 1))
  back = clips_lib.reversed_clip(clip)
  assert back.events == (clips_lib.Event('disappear', 1), clips_lib.Event('move', 0, 'right'))
  assert back.starts == ((0.0, 20.0), (40.0, 40.0))  # Where the forward clip ends.
  recolour = _clip(clips_lib.Event('recolour', 0, 'green'))
  back = clips_lib.reversed_clip(recolour)
  assert back.objects[0] == ('green', 'circle') and back.events[0].value == 'red'
  assert clips_lib.reversed_clip(back) == recolour


def test_captions_name_the_events_in_time_order():
  clip = _clip(clips_lib.Event('move', 0, 'left'), clips_lib.Event('disappear', 1))
  for caption in clips_lib.captions(clip, np.random.default_rng(0), 6):
    circle, square = caption.index('red circle'), caption.index('blue square')
    # Every template but 'after A, B' reads A first; that one too names A first.
    assert circle < square, caption
    assert any(w in caption for w in ('moves left', 'slides left', 'goes left'))


def test_frames_show_the_events():
  clip = _clip(clips_lib.Event('recolour', 0, 'green'), clips_lib.Event('appear', 1),
               objects=(('red', 'circle'), ('white', 'square')))
  frames = video.render(clip, np.random.default_rng(0), 8, 64).astype(int)
  red, green, white = (frames[..., 0] > 150) & (frames[..., 1] < 100), (
      frames[..., 1] > 130) & (frames[..., 0] < 100), frames.min(-1) > 180
  assert red[0].sum() > 50 and green[0].sum() == 0  # Red until half way through event 1.
  assert red[-1].sum() == 0 and green[-1].sum() > 50
  assert white[:4].sum() == 0 and white[-1].sum() > 50  # The square appears in event 2.


def test_video_options_are_checked():
  config = data_options.defaults()
  config.source = 'builtin_video'
  with pytest.raises(errors.UserError, match='num_frames > 0'):
    data_options.check(config)
  config.num_frames = 8
  data_options.check(config)
  config.image_size = 32
  assert pipeline.example_batch(config, 5)['image'].shape == (1, 8, 32, 32, 3)
  bad = ml_collections.ConfigDict(CONFIG.to_dict())
  bad.num_test = 10
  with pytest.raises(ValueError, match='multiple of 4'):
    video.load_split(bad, 'test')


def test_the_query_contact_sheet_shows_a_frame_strip_per_clip(splits):
  clips = splits['test'].images[:2]
  sheet = np.asarray(contact_sheet.contact_sheet(clips, ['1: 0.9', '2: 0.8']))
  size = contact_sheet.FRAME_THUMB
  assert sheet.shape[0] == 2 * (size + 4)
  left = sheet.shape[1] - 8 * size  # After the labels: the 8 frames of each clip.
  for row, clip in enumerate(clips):
    for t in (0, 7):
      thumb = sheet[row * (size + 4):row * (size + 4) + size, left + t * size:left + (t + 1) * size]
      np.testing.assert_array_equal(thumb[::2, ::2], clip[t])  # 32 -> 64 pixels, nearest.


def test_first_train_image_shifts_the_train_clips(splits):
  shifted = ml_collections.ConfigDict({**CONFIG.to_dict(), 'first_train_image': 50,
                                       'num_train': 3})
  part = video.load_split(shifted, 'train')
  np.testing.assert_array_equal(part.images[:], splits['train'].images[50:53])
  assert part.captions == splits['train'].captions[50:53]
  np.testing.assert_array_equal(part.image_ids, splits['train'].image_ids[50:53])

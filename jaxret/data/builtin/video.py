"""The built-in video data: generated clips and captions (`data.source='builtin_video'`).

Deterministic for `data.seed`, and per clip: clip i of a split is drawn from
its own random stream, so any clip renders on its own, in any order. Each clip
is `data.num_frames` frames of `data.image_size` pixels (`clips.py` says what
happens in them). Train clips are random (or, with `data.group_batches`, in
groups as val and test, batched group by group); val and test are groups of four
temporal near-duplicates: a clip, the same frames in reverse order, the clip
with its two events swapped, and that one reversed. Every clip key is
distinct within and across the held-out splits, so each caption has exactly
one right clip, and train avoids the held-out keys.
"""

import numpy as np

from jaxret.data import options as options_lib
from jaxret.data import records
from jaxret.data.builtin import clips as clips_lib
from jaxret.data.builtin import dataset
from jaxret.data.builtin import render as render_lib

SPLITS = dataset.SPLITS
STREAMS = {'clips': 0, 'captions': 1, 'frames': 2}
GROUP = 4  # Clips per near-duplicate group.


def _rng(data_config, split, index, stream):
  return dataset.stream_rng(data_config, split, index, STREAMS[stream])


def random_clip(rng, num_events):
  """A clip of `num_events` events, each on its own object, plus up to one still one."""
  count = int(rng.integers(num_events, min(num_events + 1, 3) + 1))
  shapes = rng.choice(len(clips_lib.SHAPES), size=count, replace=False)
  objects, starts, events = [], [], []
  for i, shape in enumerate(shapes):
    colour = clips_lib.COLOURS[rng.integers(len(clips_lib.COLOURS))]
    objects.append((colour, clips_lib.SHAPES[shape]))
    start = rng.uniform(12, 52, size=2)
    starts.append((float(start[0]), float(start[1])))
    if i >= num_events:
      continue
    kind = clips_lib.KINDS[rng.integers(len(clips_lib.KINDS))]
    value = ''
    if kind == 'move':  # A direction that keeps the object inside the frame.
      fits = [d for d, (dx, dy) in clips_lib.MOVES.items()
              if 10 <= start[0] + dx * clips_lib.MOVE_STEP <= 54
              and 10 <= start[1] + dy * clips_lib.MOVE_STEP <= 54]
      value = fits[rng.integers(len(fits))]
    elif kind == 'recolour':
      others = [c for c in clips_lib.COLOURS if c != colour]
      value = others[rng.integers(len(others))]
    events.append(clips_lib.Event(kind, i, value))
  return clips_lib.Clip(tuple(objects), tuple(starts), tuple(events))


def _state(clip, event_index, progress):
  """Per object (position, visible, colour) with event `event_index` `progress` done
  (earlier events finished, later ones not started)."""
  positions = [np.array(p, np.float64) for p in clip.starts]
  colours = [colour for colour, _ in clip.objects]
  visible = [all(e.kind != 'appear' or e.target != i for e in clip.events)
             for i in range(len(clip.objects))]
  for k, event in enumerate(clip.events):
    done = 1.0 if k < event_index else (progress if k == event_index else 0.0)
    if event.kind == 'move':
      positions[event.target] += np.array(clips_lib.MOVES[event.value]) * (
          clips_lib.MOVE_STEP * done)
    elif done > 0.5:  # Appearing, disappearing and colour changes happen half way.
      if event.kind == 'recolour':
        colours[event.target] = event.value
      else:
        visible[event.target] = event.kind == 'appear'
  return positions, visible, colours


def render(clip, rng, num_frames, image_size):
  """(num_frames, image_size, image_size, 3) uint8 frames of `clip`: the events share
  the frames equally, in order; an event's progress at a frame is measured at the
  frame's middle, so no frame sits exactly half way."""
  scale = image_size / 64
  radii = rng.uniform(6.5, 9.0, size=len(clip.objects))
  jitter = rng.uniform(-20, 20, size=(len(clip.objects), 3))
  background = (rng.uniform(15, 60) + rng.uniform(-10, 10, size=3)).astype(np.float32)
  bounds = np.linspace(0, num_frames, len(clip.events) + 1)
  frames = []
  grid = (np.arange(image_size) + 0.5) / scale
  for t in range(num_frames):
    event_index = int(np.searchsorted(bounds, t + 0.5) - 1)
    progress = (t + 0.5 - bounds[event_index]) / (bounds[event_index + 1] - bounds[event_index])
    positions, visible, colours = _state(clip, event_index, progress)
    canvas = rng.random((image_size, image_size, 3), dtype=np.float32) * 20 + (background - 10)
    for i, (_, shape) in enumerate(clip.objects):
      if not visible[i]:
        continue
      mask = render_lib._shape_mask(  # pylint: disable=protected-access
          shape, grid[None, :] - positions[i][0], grid[:, None] - positions[i][1], radii[i])
      canvas[mask] = np.array(render_lib.RGB[colours[i]], np.float32) + jitter[i]
    frames.append(np.clip(canvas + 0.5, 0, 255).astype(np.uint8))
  return np.stack(frames)


def near_duplicate_groups(rng, count, seen, what):
  """`count` clips in groups of four near-duplicates, [(clip, backwards)]: a clip, its
  reversal (the same frames backwards), the clip with its two events swapped,
  and that one reversed; no key twice, none in `seen` (which gains the keys)."""
  if count % GROUP:
    raise ValueError(f'{what} must be a multiple of {GROUP} (near-duplicate groups), '
                     f'got {count}')
  shown = []
  while len(shown) < count:
    base = random_clip(rng, 2)
    group = [(base, False), (base, True), (clips_lib.swapped(base), False),
             (clips_lib.swapped(base), True)]
    keys = {described(c, b).key for c, b in group}
    if len(keys) < GROUP or keys & seen:
      continue
    seen |= keys
    shown += group
  return shown


def held_out_clips(data_config):
  """{'val': [(clip, backwards)], 'test': [...]}: groups of four near-duplicates
  (`backwards`: shown as the clip's frames reversed, described by its reversal)."""
  seen = set()
  return {split: near_duplicate_groups(_rng(data_config, split, 0, 'clips'),
                                       data_config[f'num_{split}'], seen, f'data.num_{split}')
          for split in ('val', 'test')}


def described(clip, backwards):
  """The clip a caption describes: `clip`, or its reversal when shown backwards."""
  return clips_lib.reversed_clip(clip) if backwards else clip


def grouped(data_config, split):
  """Whether `split`'s clips come in near-duplicate groups: val and test always, train
  with `data.group_batches` (batches of whole groups)."""
  return split != 'train' or options_lib.resolve(data_config).group_batches


def clips_of_split(data_config, split):
  """[(clip, backwards)] of `split`."""
  if split == 'train' and grouped(data_config, split):
    held_out = held_out_clips(data_config)
    seen = {described(c, b).key for shown in held_out.values() for c, b in shown}
    return near_duplicate_groups(_rng(data_config, split, 0, 'clips'), data_config.num_train,
                                 seen, 'data.num_train (with data.group_batches)')

  def train_clip(i, exclude):
    rng = _rng(data_config, split, i, 'clips')
    while True:
      clip = random_clip(rng, int(rng.integers(1, 3)))
      backwards = bool(rng.integers(2))
      if described(clip, backwards).key not in exclude:
        return clip, backwards

  return dataset.items_of_split(data_config, split, held_out_clips,
                                lambda shown: described(*shown).key, train_clip,
                                'the built-in video data')


class RenderedClips(dataset.RenderedArray):
  """A split's clips as a read-only (N, T, H, W, 3) array that renders on access."""

  def __init__(self, shown, data_config, split):
    self.shown = shown
    self.data_config = data_config
    self.split = split
    self.grouped = grouped(data_config, split)  # Once: every clip renders with it.
    size = data_config.image_size
    self.shape = (len(shown), data_config.num_frames, size, size, 3)
    self.dtype = np.dtype(np.uint8)

  def __len__(self):
    return len(self.shown)

  def render(self, index):
    clip, backwards = self.shown[index]
    # In a group, both clips of a reversed pair draw from the forward clip's stream:
    # the same frames.
    group_index = index - int(backwards) if self.grouped else index
    frames = render(clip, _rng(self.data_config, self.split, group_index, 'frames'),
                    self.data_config.num_frames, self.data_config.image_size)
    return frames[::-1] if backwards else frames


def load_split(data_config, split):
  """`records.Records` of `split`: (N, T, H, W, 3) clips; train clips render lazily."""
  shown = clips_of_split(data_config, split)
  texts = [clips_lib.captions(described(c, b), _rng(data_config, split, i, 'captions'),
                              data_config.captions_per_image)
           for i, (c, b) in enumerate(shown)]
  clips = RenderedClips(shown, data_config, split)
  if split != 'train':
    clips = clips[:]
  ids = dataset.first_id(data_config, split) + np.arange(len(shown), dtype=np.int64)
  groups = np.arange(len(shown)) // GROUP if grouped(data_config, split) else None
  return records.Records(images=clips, image_ids=ids, captions=texts, groups=groups)

"""The data-source and preprocessing keys of `config.data`, with their defaults.

Every config lists these keys (see configs/demo.py and configs/real_data.py),
so `--config.data.source=karpathy --config.data.path=...` works on any of them
and a misspelt override fails. `resolve` fills in the defaults only for a
config written before these keys existed, so such a config keeps its old
behaviour (built-in data, no augmentation).
"""

import ml_collections

from jaxret import errors

SOURCES = ('builtin', 'builtin_video', 'tfds', 'karpathy', 'wds', 'msrvtt', 'vatex')
VIDEO_SOURCES = ('builtin_video', 'msrvtt', 'vatex')
SHORT_CLIP = ('pad', 'refuse')
TRAIN_CROPS = ('none', 'random_resized')
ON_BAD_RECORD = ('skip', 'error')


def defaults():
  """The keys and their defaults (the built-in data's behaviour)."""
  return ml_collections.ConfigDict({
      # builtin | builtin_video | tfds | karpathy | wds | msrvtt | vatex.
      'source': 'builtin',
      # Frames per clip: 0 for images (B, H, W, 3); T for video, (B, T, H, W, 3), which
      # builtin_video, msrvtt and vatex need (and wds with .mp4 members).
      'num_frames': 0,
      # msrvtt, vatex: the folder of <video id>.mp4 files (default: the JSON file's folder).
      'video_root': '',
      # A video with fewer frames than num_frames: 'pad' (frames repeat) or 'refuse' (bad).
      'short_clip': 'pad',
      # tfds: the data_dir (default: TFDS's own); karpathy: the dataset_*.json file; wds: a shard
      # pattern with '{split}' and braces, e.g. /data/cc/{split}-{0000..0099}.tar.
      'path': '',
      # tfds: the dataset name, e.g. 'coco_captions/2014'.
      'name': '',
      # karpathy: the folder that `filepath/filename` are relative to
      # (default: the JSON file's folder).
      'image_root': '',
      # jaxret split -> the source's split; '+' joins, '[a:b]' slices images.
      'splits': {'train': 'train+restval', 'val': 'val', 'test': 'test'},
      # Where image, captions and image id are: tfds feature keys ('/' descends
      # into nested features), or wds file extensions (';' separates
      # alternatives; '__key__' is the sample key). '': the source's default
      # (SOURCE_KEYS below).
      'image_key': '',
      'caption_key': '',
      'id_key': '',
      # Training crop: 'none' (resize the shorter side and centre crop, as in
      # evaluation) or 'random_resized' (scale and aspect ratio ranges below).
      'train_crop': 'none',
      'crop_scale': (0.5, 1.0),
      'crop_ratio': (3 / 4, 4 / 3),
      # A missing or corrupt image, an empty caption, an entry without
      # captions, a truncated shard: 'skip' (count, log and go on) or 'error'.
      'on_bad_record': 'skip',
      # wds training: samples shuffled together (one chunk held in memory).
      'shuffle_buffer': 1000,
      # Training batches of whole near-duplicate groups (Records.groups; the built-in
      # train split is then generated in groups too): each image's captions in
      # turn, groups kept together, in a seeded order (pipeline.grouped_order).
      'group_batches': False,
      # builtin, builtin_video: the index of the first training image (or clip) in the
      # generator's streams, so train is images first_train_image .. + num_train - 1. Models
      # trained on disjoint ranges never see each other's images (a held-out teacher).
      'first_train_image': 0,
  })


_DEFAULTS = defaults()
BUILTIN_SOURCES = ('builtin', 'builtin_video')
MAX_FIRST_TRAIN_IMAGE = 10_000_000  # Below the val split's image ids.


def get(data_config, key):
  """`data_config[key]`, or its default for a config written before `key` existed: one
  key, without `resolve`'s cost, for reads made once per item."""
  return data_config[key] if key in data_config else _DEFAULTS[key]


SOURCE_KEYS = {
    'tfds': {'image_key': 'image', 'caption_key': 'captions/text', 'id_key': 'image/id'},
    'wds': {'image_key': 'jpg;jpeg;png;webp', 'caption_key': 'txt', 'id_key': '__key__'},
}  # wds with data.num_frames > 0: image_key 'mp4'.


def resolve(data_config):
  """`data_config` with any of the keys above that it lacks set to their default."""
  resolved = defaults()
  for key, value in data_config.items():
    if key in resolved:
      resolved[key] = value
  if resolved.source == 'wds' and resolved.num_frames and not resolved.image_key:
    resolved.image_key = 'mp4'  # Video shards: .mp4 members.
  for key, value in SOURCE_KEYS.get(resolved.source, {}).items():
    if not resolved[key]:
      resolved[key] = value
  check(resolved)
  return resolved


def check(options):
  if options.source not in SOURCES and ':' not in options.source:
    raise errors.UserError(f'unknown data.source {options.source!r}; known: {", ".join(SOURCES)}'
                           ', or an import path "package.module:load_split"')
  if options.train_crop not in TRAIN_CROPS:
    raise errors.UserError(f'unknown data.train_crop {options.train_crop!r}; '
                           f'known: {", ".join(TRAIN_CROPS)}')
  if options.on_bad_record not in ON_BAD_RECORD:
    raise errors.UserError(f'unknown data.on_bad_record {options.on_bad_record!r}; '
                           f'known: {", ".join(ON_BAD_RECORD)}')
  if options.source in VIDEO_SOURCES and options.num_frames < 1:
    raise errors.UserError(f'data.source={options.source!r} is video: it needs data.num_frames > 0'
                           f', got {options.num_frames}')
  if options.num_frames and options.source not in VIDEO_SOURCES + ('wds',):
    raise errors.UserError(f'data.num_frames > 0 (video) needs a video source '
                           f'({", ".join(VIDEO_SOURCES)}, or wds with .mp4 members), got '
                           f'data.source={options.source!r}')
  if options.short_clip not in SHORT_CLIP:
    raise errors.UserError(f'unknown data.short_clip {options.short_clip!r}; '
                           f'known: {", ".join(SHORT_CLIP)}')
  if options.first_train_image and options.source not in BUILTIN_SOURCES:
    raise errors.UserError(f'data.first_train_image applies to the built-in data '
                           f'({", ".join(BUILTIN_SOURCES)}), not data.source={options.source!r}')
  if not 0 <= options.first_train_image < MAX_FIRST_TRAIN_IMAGE:
    raise errors.UserError(f'data.first_train_image must be in [0, {MAX_FIRST_TRAIN_IMAGE:,}), '
                           f'got {options.first_train_image}')
  low, high = options.crop_scale
  if not 0 < low <= high <= 1:
    raise errors.UserError(f'data.crop_scale must satisfy 0 < low <= high <= 1, got {low, high}')
  if options.source in ('karpathy', 'wds', 'msrvtt', 'vatex') and not options.path:
    raise errors.UserError(f'data.source={options.source!r} needs --config.data.path=...')
  if options.source == 'tfds' and not options.name:
    raise errors.UserError('data.source=tfds needs --config.data.name=DATASET '
                           '(e.g. coco_captions/2014)')

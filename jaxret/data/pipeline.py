"""Training batches with grain, and evaluation chunks, from a split's `Records`.

Map-style sources (builtin, tfds, karpathy): training iterates over (image,
caption) pairs, shuffled per epoch by a seeded grain index shuffle. Global
batch s is pairs [s·B, (s+1)·B) of that stream and process p takes its
contiguous share of it, so the examples seen do not depend on the number of
processes or devices, and the iterator state (a position) is checkpointed
with the model for exact resume. Streamed sources (wds) iterate over their
shards instead (`wds.ShardStream`: shards split over processes, a seeded
chunk shuffle, a checkpointable position).

Each example is decoded, cropped (`data.train_crop`: centre crop, or a random
resized crop drawn from a generator seeded by (seed, position), so it is the
same whatever the thread or process count) and normalised; captions are
tokenised with padding and truncation. An image that turns out to be bad is
skipped: its slot in the batch is filled with the batch's next good pair, so
that shapes stay static, and it is counted; each epoch ends with a summary.
"""

import atexit
import concurrent.futures
import weakref

import grain
import numpy as np

from jaxret import errors
from jaxret.data import images as images_lib
from jaxret.data import options as options_lib
from jaxret.data import videos as videos_lib
from jaxret.data import wds

# Private batch keys, removed (in order, after prefetching) by `train_iterator`.
EPOCH_KEY = '_epoch'
BAD_RECORDS_KEY = '_bad_records'


def normalize_images(images, data_config):
  """uint8 (..., H, W, 3) -> float32 normalised with the config's mean and std."""
  mean = np.asarray(data_config.image_mean, np.float32)
  std = np.asarray(data_config.image_std, np.float32)
  return (images.astype(np.float32) / 255.0 - mean) / std


class Cropper:
  """Decoded image -> (size, size, 3) uint8 training crop, per `data.train_crop`."""

  def __init__(self, data_config, seed):
    self.options = options_lib.resolve(data_config)
    self.size = data_config.image_size
    self.seed = seed
    self.min_size = images_lib.draft_size(self.size, self.options.train_crop,
                                          self.options.crop_scale)

  def __call__(self, image, position):
    """`image`: a PIL image; `position`: ints naming the example in the stream."""
    if self.options.train_crop == 'random_resized':
      rng = np.random.default_rng([self.seed, *position])
      return images_lib.random_resized_crop(image, self.size, rng, self.options.crop_scale,
                                            self.options.crop_ratio)
    return images_lib.centre_crop(image, self.size)


def fill_bad_slots(good):
  """Row each slot takes its pair from: itself when good, else the next good row (cyclic)."""
  good = np.asarray(good, bool)
  if not good.any():
    raise errors.UserError('every image of a training batch is bad; check the data '
                           '(see the skipped files above)')
  good_rows = np.flatnonzero(good)
  following = np.searchsorted(good_rows, np.arange(len(good)))
  return np.where(good, np.arange(len(good)), good_rows[following % len(good_rows)])


class PairBatches:
  """Assembles a batch from (position, pair index) rows: images (rendered or decoded
  and cropped on access), tokenised captions and image ids. Runs in grain's threads."""

  def __init__(self, records, tokenizer, data_config, seed=0):
    self.image_index, self.texts = records.pairs()
    self.records = records
    self.tokenizer = tokenizer
    self.data_config = data_config
    self.options = options_lib.resolve(data_config)
    self.cropper = Cropper(data_config, seed)
    self.bad_records = records.bad_records
    # Generated data has no bad records and is used at its own size when not cropped.
    # Decoded clips come resized and centre-cropped (no random crops for video).
    self.clips = isinstance(records.images, videos_lib.EncodedClips)
    self.decodes = isinstance(records.images, images_lib.EncodedImages)
    self.crops = self.clips or self.decodes or self.options.train_crop != 'none'

  def __len__(self):
    return len(self.image_index)

  def _image(self, row, position, epoch):
    """uint8 crop of image `row` (or its clip), or None when it is bad."""
    if self.clips:
      return self.records.images.open(row, epoch)
    if self.decodes:
      image = self.records.images.open(row, self.cropper.min_size, epoch)
    else:
      image = images_lib.Image.fromarray(np.asarray(self.records.images[row]))
    return None if image is None else self.cropper(image, position)

  def __call__(self, rows):
    """`rows`: (B, 2) int array of (position in the pair stream, pair index)."""
    positions, pair_indices = rows[:, 0], rows[:, 1]
    image_index = self.image_index[pair_indices]
    epochs = positions // len(self)
    texts = [self.texts[i] for i in pair_indices]
    if self.crops:
      crops = [self._image(int(i), (int(p),), int(e))
               for i, p, e in zip(image_index, positions, epochs)]
      source = fill_bad_slots([c is not None for c in crops])
      image_index = image_index[source]
      texts = [texts[i] for i in source]
      images = np.stack([crops[i] for i in source])
    else:
      images = self.records.images[image_index]
    tokens, mask = self.tokenizer.encode(texts)
    batch = {
        'image': normalize_images(images, self.data_config),
        'text': tokens,
        'text_mask': mask,
        # The image's row in the split identifies it (user ids may be strings).
        'image_id': image_index.astype(np.int32),
    }
    if self.bad_records is not None:
      batch[EPOCH_KEY] = int(epochs.max())
      batch[BAD_RECORDS_KEY] = self.bad_records
    return batch


class StreamBatches:
  """Assembles a batch of streamed samples (`wds.ShardStream` elements): decodes and
  crops the images in `num_threads` threads, tokenises one caption per sample."""

  def __init__(self, stream, tokenizer, data_config, seed=0):
    self.stream = stream
    self.tokenizer = tokenizer
    self.data_config = data_config
    self.cropper = Cropper(data_config, seed)
    self.options = options_lib.resolve(data_config)
    self.num_frames = self.options.num_frames
    self.num_threads = max(int(data_config.num_threads), 1)
    self._pool = None

  def _image(self, sample):
    epoch = sample['epoch']
    if self.num_frames:  # A video member: a clip, resized and centre-cropped.
      try:
        return videos_lib.decode_clip(sample['image'], self.num_frames, self.data_config.image_size,
                                      self.options.short_clip)
      except videos_lib.BadVideo as e:
        self.stream.bad_records.report(e.kind, sample['name'], str(e), epoch)
        return None
    try:
      image = images_lib.open_image(sample['image'], self.cropper.min_size)
    except images_lib.BadImage as e:
      self.stream.bad_records.report('corrupt_image', sample['name'], str(e), epoch)
      return None
    return self.cropper(image, (self.stream.process_index, sample['count']))

  def __call__(self, samples):
    if self.num_threads > 1:
      if self._pool is None:
        self._pool = concurrent.futures.ThreadPoolExecutor(self.num_threads)
      crops = list(self._pool.map(self._image, samples))
    else:
      crops = [self._image(s) for s in samples]
    source = fill_bad_slots([c is not None for c in crops])
    samples = [samples[i] for i in source]
    tokens, mask = self.tokenizer.encode([s['caption'] for s in samples])
    return {
        'image': normalize_images(np.stack([crops[i] for i in source]), self.data_config),
        'text': tokens,
        'text_mask': mask,
        'image_id': np.asarray([s['id_hash'] for s in samples], np.int32),
        EPOCH_KEY: max(s['epoch'] for s in samples),
        BAD_RECORDS_KEY: self.stream.bad_records,
    }


def grouped_order(pair_groups, pair_images, seed):
  """An epoch's order of the pairs (captions) that keeps near-duplicate groups together.

  The epoch is one round per caption of an image: in round r every image gives
  its r-th caption (captions in a seeded random order per image), the groups
  follow each other in a seeded random order and each group's images lie side
  by side, so a batch holds whole groups of near-duplicates, each image once.
  """
  rng = np.random.default_rng(seed)
  pair_groups, pair_images = np.asarray(pair_groups), np.asarray(pair_images)
  shuffled = rng.permutation(len(pair_images))  # Random captions' ranks within an image.
  by_image = shuffled[np.argsort(pair_images[shuffled], kind='stable')]
  first = np.searchsorted(pair_images[by_image], pair_images[by_image])
  round_of = np.empty(len(pair_images), np.int64)
  round_of[by_image] = np.arange(len(by_image)) - first
  group_rank = rng.permutation(pair_groups.max() + 1)[pair_groups]
  image_rank = rng.permutation(pair_images.max() + 1)[pair_images]
  return np.lexsort((image_rank, group_rank, round_of))


def train_dataset(records, tokenizer, data_config, *, seed, global_batch,
                  process_index=0, process_count=1):
  """An endless grain dataset whose element s is this process's part of global batch s.

  A MapDataset for map-style sources (random access by step), an IterDataset
  for a streamed source (`records` is then a `wds.StreamRecords`).
  """
  if global_batch % process_count:
    raise ValueError(f'global batch {global_batch} does not split over {process_count} processes')
  local_batch = global_batch // process_count
  if isinstance(records, wds.StreamRecords):
    stream = records.stream(seed=seed, process_index=process_index, process_count=process_count)
    return stream.batch(local_batch, drop_remainder=True, batch_fn=list).map(
        StreamBatches(stream, tokenizer, data_config, seed))
  assemble = PairBatches(records, tokenizer, data_config, seed)
  if options_lib.resolve(data_config).group_batches:
    if records.groups is None:
      raise errors.UserError('data.group_batches needs a source with near-duplicate groups '
                             '(the built-in data); this one has none')
    pairs = grain.MapDataset.source(grouped_order(records.groups[assemble.image_index],
                                                  assemble.image_index, seed))
  else:
    pairs = grain.MapDataset.range(len(assemble)).shuffle(seed=seed)
  dataset = (pairs
             .repeat(None)
             .map_with_index(lambda position, pair: (position, pair))
             .batch(local_batch, drop_remainder=True, batch_fn=np.asarray))
  return dataset[process_index::process_count].map(assemble)


class EpochSummaries(grain.transforms.Map):
  """Runs in order after prefetching: drops the private keys and logs the bad-record
  summary of each epoch once the first batch of a later epoch arrives."""

  def __init__(self):
    self.last_epoch = None

  def map(self, element):
    epoch = element.pop(EPOCH_KEY, None)
    bad_records = element.pop(BAD_RECORDS_KEY, None)
    if epoch is None:
      return element
    if self.last_epoch is not None:
      for finished in range(self.last_epoch, epoch):
        bad_records.end_of_epoch(finished)
    self.last_epoch = epoch if self.last_epoch is None else max(epoch, self.last_epoch)
    return element


def train_iterator(dataset, data_config):
  """A checkpointable iterator with background prefetching threads."""
  if isinstance(dataset, grain.MapDataset):
    options = grain.ReadOptions(num_threads=data_config.num_threads,
                                prefetch_buffer_size=data_config.prefetch)
    dataset = dataset.to_iter_dataset(options)
  else:
    dataset = grain.experimental.ThreadPrefetchIterDataset(
        dataset, prefetch_buffer_size=data_config.prefetch)
  iterator = iter(dataset.map(EpochSummaries()))
  # Close the prefetch threads before interpreter shutdown tears down their modules.
  atexit.register(_close, weakref.ref(iterator))
  return iterator


def _close(iterator_ref):
  iterator = iterator_ref()
  if iterator is not None:
    iterator.close()


def example_batch(data_config, text_len):
  """Zeros shaped like one training example (for shape inference and init): an image
  (1, H, W, 3), or a clip (1, T, H, W, 3) when `data.num_frames` is T > 0."""
  size = data_config.image_size
  frames = options_lib.resolve(data_config).num_frames
  return {
      'image': np.zeros((1,) + ((frames,) if frames else ()) + (size, size, 3), np.float32),
      'text': np.zeros((1, text_len), np.int32),
      'text_mask': np.ones((1, text_len), np.int32),
      'image_id': np.zeros((1,), np.int32),
  }


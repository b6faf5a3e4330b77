"""Webdataset tar shards (`key.jpg` + `key.txt`), read with the `webdataset` library.

`data.path` is a shard pattern with '{split}' and braces or '*', e.g.
`/data/cc3m/{split}-{000000..000331}.tar` or `/data/cc3m/{split}-*.tar`; '{split}'
becomes the source split (`data.splits`; 'a+b' reads both). A sample's captions are
the non-empty lines of its caption file; training takes one of them per sample, evaluation all.

Evaluation splits are read whole into memory (encoded). Training streams:
`ShardStream` is a grain `IterDataset` whose epoch e visits the shards in a
seeded order, process p reading shards p, p+P, ... (as open_clip does, so the
examples a process sees depend on the process count), and shuffles samples in
chunks of `data.shuffle_buffer`. Its state (epoch, shard, sample offset of
the current chunk, samples emitted from it) is checkpointed with the model; a
resumed run re-reads that one chunk and continues with exactly the samples an
uninterrupted run would have seen.
"""

import glob
import os
import zlib

import braceexpand
import grain
import numpy as np
from webdataset import tariterators

from jaxret import errors
from jaxret.data import bad_records as bad_records_lib
from jaxret.data import images as images_lib
from jaxret.data import videos as videos_lib
from jaxret.data import records as records_lib
from jaxret.data import split_spec


def shard_paths(options, split, allow_slices=True):
  """The shard files of jaxret split `split`, and the sample slice of each part."""
  if '{split}' not in options.path:
    raise errors.UserError(f"data.path={options.path!r} needs '{{split}}' where the split "
                           'name goes, e.g. /data/shards/{split}-{0000..0099}.tar')
  parts = []
  for name, part in split_spec.parse(split_spec.lookup(options.splits, split)):
    if not allow_slices and part != slice(None):
      raise errors.UserError(f'the wds training split cannot be sliced ({name}[...])')
    paths = []
    for pattern in braceexpand.braceexpand(options.path.replace('{split}', name)):
      paths.extend(sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern])
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
      raise errors.UserError(f'{len(missing)} of {len(paths)} shards of split {name!r} do not '
                             f'exist, e.g. {missing[0]}')
    if paths:  # A part with no shards (e.g. no 'restval') adds nothing.
      parts.append((paths, part))
  if not parts:
    raise errors.UserError(f'no shards match data.path={options.path!r} for split {split!r} '
                           f'({split_spec.lookup(options.splits, split)})')
  return parts


def samples_of_shard(path, bad_records, epoch=None):
  """The raw samples ({'__key__', ext: bytes}) of one shard; a shard that ends mid-record
  is reported once and read up to there."""
  reported = []

  def handler(exn):
    if not reported:
      reported.append(exn)
      bad_records.report('truncated_shard', path, f'{type(exn).__name__}: {exn.args[0]}', epoch)
    return True

  try:
    stream = open(path, 'rb')  # pylint: disable=consider-using-with
  except OSError as exn:
    handler(exn)
    return
  # Closed here, also when the reader stops early (the generator is closed or collected):
  # webdataset's own opener leaves that to the garbage collector.
  with stream:
    files = tariterators.tar_file_expander([{'url': path, 'stream': stream}], handler=handler)
    yield from tariterators.group_by_keys(files, handler=handler)


def _first(sample, keys):
  for key in keys.split(';'):
    if key in sample:
      return sample[key]
  return None


def parse_sample(sample, options, bad_records, shard, epoch=None):
  """-> {'image': bytes, 'captions': [str], 'key', 'name'}, or None when bad (reported)."""
  name = f'{os.path.basename(shard)}:{sample["__key__"]}'
  image = _first(sample, options.image_key)
  caption = _first(sample, options.caption_key)
  if image is None or caption is None:
    bad_records.report('incomplete_sample', name,
                       'no ' + ('image' if image is None else 'caption') + ' file', epoch)
    return None
  text = caption.decode('utf-8', 'replace') if isinstance(caption, bytes) else str(caption)
  captions = [' '.join(line.split()) for line in text.splitlines() if line.strip()]
  if not captions:
    bad_records.report('empty_caption', name, '', epoch)
    return None
  if options.id_key == '__key__':
    key = sample['__key__']
  else:
    key = _first(sample, options.id_key)
    key = key.decode('utf-8').strip() if isinstance(key, bytes) else key
  return {'image': image, 'captions': captions, 'key': key, 'name': name}


def load_split(options, split, image_size, num_threads=1):
  """An evaluation split, read whole: `records.Records` of its samples."""
  bad = bad_records_lib.BadRecords(options.on_bad_record, name=split)
  blobs, names, ids, captions = [], [], [], []
  for paths, part in shard_paths(options, split):
    parsed = []
    for path in paths:
      for sample in samples_of_shard(path, bad):
        sample = parse_sample(sample, options, bad, path)
        if sample is not None:
          parsed.append(sample)
    for sample in parsed[part]:
      blobs.append(sample['image'])
      names.append(sample['name'])
      ids.append(sample['key'])
      captions.append(sample['captions'])
  if not blobs:
    raise errors.UserError(f'no usable samples in split {split!r} ({options.path})')
  if options.num_frames:  # Video members (.mp4): clips.
    images = videos_lib.EncodedClips(blobs.__getitem__, names, options.num_frames, image_size,
                                     bad, options.short_clip, num_threads)
  else:
    images = images_lib.EncodedImages(blobs.__getitem__, names, image_size, bad, num_threads)
  return records_lib.Records(images=images, image_ids=np.asarray(ids), captions=captions,
                             bad_records=bad)


class StreamRecords:
  """The training split of a wds source: its shards, streamed by `stream(...)`."""

  def __init__(self, options, split):
    self.options = options
    self.shards = [p for paths, _ in shard_paths(options, split, allow_slices=False)
                   for p in paths]
    self.bad_records = bad_records_lib.BadRecords(options.on_bad_record, name=split)

  @property
  def captions(self):
    """Every sample's captions, by one pass over the shards (to build a vocabulary)."""
    for path in self.shards:
      for sample in samples_of_shard(path, self.bad_records):
        sample = parse_sample(sample, self.options, self.bad_records, path)
        if sample is not None:
          yield sample['captions']

  def stream(self, *, seed, process_index=0, process_count=1):
    if len(self.shards) < process_count:
      raise errors.UserError(f'{len(self.shards)} training shards cannot feed {process_count} '
                             'processes; use at least one shard per process')
    return ShardStream(self.shards, self.options, self.bad_records, seed=seed,
                       process_index=process_index, process_count=process_count)


class ShardStream(grain.IterDataset):
  """Endless, seeded, resumable stream of training samples from this process's shards.

  Elements: {'image': bytes, 'caption', 'id_hash', 'name', 'epoch', 'count'}
  (`count`: the sample's position in this process's stream).
  """

  def __init__(self, shards, options, bad_records, *, seed, process_index, process_count):
    super().__init__()
    self.shards = list(shards)
    self.options = options
    self.bad_records = bad_records
    self.seed = seed
    self.process_index = process_index
    self.process_count = process_count
    self.chunk_size = max(int(options.shuffle_buffer), 1)

  def shards_of(self, epoch):
    order = np.random.default_rng([self.seed, epoch, 0]).permutation(len(self.shards))
    return [self.shards[i] for i in order[self.process_index::self.process_count]]

  def __iter__(self):
    return ShardStreamIterator(self)


class ShardStreamIterator(grain.DatasetIterator):
  """The iterator of `ShardStream`; its state is JSON-serialisable ints."""

  def __init__(self, stream):
    super().__init__()
    self._stream = stream
    self._state = {'epoch': 0, 'shard': 0, 'offset': 0, 'emitted': 0, 'count': 0}
    self._chunk = None  # The current chunk's samples, in emission order.
    self._next_chunk = None  # (epoch, shard, offset) where the next chunk starts.
    self._reader = None  # (epoch, shard, offset, generator) of the shard being read.

  def get_state(self):
    return dict(self._state)

  def set_state(self, state):
    self._state = {k: int(v) for k, v in state.items()}
    self._chunk = None
    self._reader = None

  def _samples_from(self, epoch, shard, offset):
    """A generator of shard `shard`'s parsed samples from `offset` on (reused when it is
    already there)."""
    if self._reader is not None and self._reader[:3] == (epoch, shard, offset):
      return self._reader[3]
    path = self._stream.shards_of(epoch)[shard]
    raw = samples_of_shard(path, self._stream.bad_records, epoch)
    for _ in range(offset):  # Skipping on resume: read, not decoded.
      next(raw, None)
    return raw

  def _load_chunk(self):
    stream = self._stream
    epoch, shard, offset = self._state['epoch'], self._state['shard'], self._state['offset']
    shards = stream.shards_of(epoch)
    samples = []
    while len(samples) < stream.chunk_size and shard < len(shards):
      raw = self._samples_from(epoch, shard, offset)
      exhausted = True
      for sample in raw:
        offset += 1
        parsed = parse_sample(sample, stream.options, stream.bad_records, shards[shard], epoch)
        if parsed is not None:
          samples.append(parsed)
        if len(samples) == stream.chunk_size:
          exhausted = False
          self._reader = (epoch, shard, offset, raw)
          break
      if exhausted:
        shard, offset = shard + 1, 0
    if shard >= len(shards):
      self._next_chunk = (epoch + 1, 0, 0)
      if not samples and self._state['shard'] == 0 and self._state['offset'] == 0:
        raise errors.UserError(f'epoch {epoch} of the training shards has no usable sample')
    else:
      self._next_chunk = (epoch, shard, offset)
    key = [stream.seed, epoch, self._state['shard'], self._state['offset'], 1]
    order = np.random.default_rng(key).permutation(len(samples))
    self._chunk = [samples[i] for i in order]

  def __next__(self):
    if self._chunk is None:
      self._load_chunk()
    while self._state['emitted'] >= len(self._chunk):
      epoch, shard, offset = self._next_chunk
      self._state.update(epoch=epoch, shard=shard, offset=offset, emitted=0)
      self._load_chunk()
    sample = self._chunk[self._state['emitted']]
    count = self._state['count']
    self._state['emitted'] += 1
    self._state['count'] += 1
    captions = sample['captions']
    if len(captions) > 1:
      rng = np.random.default_rng([self._stream.seed, self._stream.process_index, count, 2])
      caption = captions[int(rng.integers(len(captions)))]
    else:
      caption = captions[0]
    return {'image': sample['image'], 'caption': caption, 'name': sample['name'],
            'id_hash': zlib.crc32(str(sample['key']).encode()) & 0x7FFFFFFF,
            'epoch': self._state['epoch'], 'count': count}

"""Data sources by name (`config.data.source`); each returns a split's `Records`.

builtin: the generated dataset (the default); builtin_video: generated clips.
msrvtt, vatex: a caption JSON and a folder of .mp4 files (`video_sources.py`).
tfds: `tfds.data_source` over ArrayRecord files, without TensorFlow.
karpathy: a Karpathy-split JSON and an image folder.
wds: webdataset tar shards (training streams them; evaluation splits are read whole).
Or an import path 'package.module:load_split' of a function (data_config, split) ->
Records. Keys: `jaxret/data/options.py`.
"""

from jaxret import registry
from jaxret.data import karpathy
from jaxret.data import options as options_lib
from jaxret.data import tfds_source
from jaxret.data import video_sources
from jaxret.data import wds
from jaxret.data.builtin import dataset
from jaxret.data.builtin import video

SOURCES = options_lib.SOURCES


def load_split(data_config, split):
  """The `records.Records` of `split` ('train', 'val', 'test' or any `data.splits` key).

  For a wds training split: a `wds.StreamRecords`, which the pipeline streams.
  """
  options = options_lib.resolve(data_config)
  if ':' in options.source:  # A user's own source: load_split(data_config, split) -> Records.
    return registry.resolve(options.source, {}, 'data.source')(data_config, split)
  if options.source == 'builtin':
    return dataset.load_split(data_config, split)
  if options.source == 'builtin_video':
    return video.load_split(data_config, split)
  if options.source in video_sources.ENTRIES:
    return video_sources.load_split(options, split, data_config)
  args = (options, split, data_config.image_size, data_config.num_threads)
  if options.source == 'karpathy':
    return karpathy.load_split(*args)
  if options.source == 'tfds':
    return tfds_source.load_split(*args)
  if split == 'train':
    return wds.StreamRecords(options, split)
  return wds.load_split(*args)

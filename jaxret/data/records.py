"""The in-memory form every data source produces for one split."""

import dataclasses
import os
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class Records:
  """Images with their captions, keyed by image id.

  Attributes:
    images: (N, H, W, 3) uint8, or (N, T, H, W, 3) clips of T frames (video sources).
    image_ids: (N,) unique ids (ints or strings); Recall@K is computed on these.
    captions: N lists of captions, one list per image.
    bad_records: the split's `bad_records.BadRecords` (what was dropped while
      loading, and what decoding finds later), or None for generated data.
    metadata: None, or N dicts of field: string, number or date (YYYY-MM-DD),
      which --mode=index stores with the items for filtered search.
    groups: (N,) ints, each image's group of near-duplicates (the built-in
      data's), or None; `data.group_batches` batches whole groups together.
  """
  images: np.ndarray
  image_ids: np.ndarray
  captions: list
  bad_records: Any = None
  metadata: Any = None
  groups: Any = None

  def __post_init__(self):
    n = len(self.images)
    if len(self.image_ids) != n or len(self.captions) != n:
      raise ValueError(f'{n} images but {len(self.image_ids)} ids and '
                       f'{len(self.captions)} caption lists')
    if self.metadata is not None and len(self.metadata) != n:
      raise ValueError(f'{n} images but {len(self.metadata)} metadata entries')
    if len(np.unique(self.image_ids)) != n:
      raise ValueError('image ids must be unique within a split')

  def __len__(self):
    return len(self.images)

  def pairs(self):
    """Flattened (image index, caption) pairs, in image order."""
    image_index = np.repeat(np.arange(len(self)), [len(c) for c in self.captions])
    texts = [t for caps in self.captions for t in caps]
    return image_index, texts


def existing_file(root, name, bad_records, reason):
  """The path of `name` under `root`, or None (reported as `reason`) where no file is there."""
  path = os.path.join(root, name)
  if not os.path.isfile(path):
    bad_records.report(reason, path)
    return None
  return path


def file_reader(paths):
  """read(index) -> the bytes of file `paths[index]`, for sources that decode on access."""

  def read(index):
    with open(paths[index], 'rb') as f:
      return f.read()

  return read

"""Image decoding and cropping with Pillow, and the lazily decoded image array of a split.

Evaluation and `train_crop='none'` resize the shorter side to `size` and take
the centre square (CLIP's and ALBEF's evaluation transform, done as one
box-resize); `random_resized` is torchvision's RandomResizedCrop (scale and
log-uniform aspect ratio, ten tries, then a centre crop), drawn from a
generator that the caller seeds per example. Resampling is bicubic. JPEGs are
decoded at a reduced scale (libjpeg's draft mode) when that still leaves
enough pixels, which is most of the decoding cost saved.
"""

import concurrent.futures
import io
import math
import re

import numpy as np
from PIL import Image

RESAMPLE = Image.Resampling.BICUBIC


class BadImage(Exception):
  """An image that cannot be read or decoded."""


def open_image(encoded, min_size=None):
  """Encoded bytes -> an RGB `PIL.Image`, loaded; raises `BadImage`.

  `min_size`: the decoder may shrink the image (JPEG draft) as long as both
  sides stay at least this large.
  """
  try:
    image = Image.open(io.BytesIO(encoded))
    if min_size and image.format == 'JPEG':
      image.draft('RGB', (min_size, min_size))
    image = image.convert('RGB')
    image.load()
  except Exception as e:  # pylint: disable=broad-except
    message = re.sub(r' <_io\.BytesIO object at 0x[0-9a-f]+>', '', str(e))
    raise BadImage(f'{type(e).__name__}: {message}') from e
  if image.width < 1 or image.height < 1:
    raise BadImage('empty image')
  return image


def centre_box(width, height):
  """The centred square of side min(width, height), as a PIL box."""
  side = min(width, height)
  left, top = (width - side) / 2, (height - side) / 2
  return (left, top, left + side, top + side)


def random_resized_box(width, height, rng, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
  """torchvision's RandomResizedCrop.get_params, as a PIL box (left, top, right, bottom)."""
  area = width * height
  log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
  for _ in range(10):
    target_area = area * rng.uniform(scale[0], scale[1])
    aspect = math.exp(rng.uniform(*log_ratio))
    w = int(round(math.sqrt(target_area * aspect)))
    h = int(round(math.sqrt(target_area / aspect)))
    if 0 < w <= width and 0 < h <= height:
      left = int(rng.integers(0, width - w + 1))
      top = int(rng.integers(0, height - h + 1))
      return (left, top, left + w, top + h)
  in_ratio = width / height  # Fallback: the largest centred crop within `ratio`.
  if in_ratio < ratio[0]:
    w, h = width, int(round(width / ratio[0]))
  elif in_ratio > ratio[1]:
    w, h = int(round(height * ratio[1])), height
  else:
    w, h = width, height
  left, top = (width - w) // 2, (height - h) // 2
  return (left, top, left + w, top + h)


def crop_to_array(image, size, box):
  """The `box` of a PIL image resized to (size, size): uint8 (size, size, 3)."""
  return np.asarray(image.resize((size, size), RESAMPLE, box=box), np.uint8)


def centre_crop(image, size):
  return crop_to_array(image, size, centre_box(image.width, image.height))


def random_resized_crop(image, size, rng, scale, ratio):
  return crop_to_array(image, size, random_resized_box(image.width, image.height, rng,
                                                       scale, ratio))


def draft_size(size, train_crop='none', crop_scale=(1.0, 1.0)):
  """The smallest decode size that keeps every crop at >= `size` pixels a side."""
  if train_crop == 'random_resized':
    return int(math.ceil(size / math.sqrt(crop_scale[0]) * 4 / 3))
  return size


def encode_png(array):
  buffer = io.BytesIO()
  Image.fromarray(np.asarray(array, np.uint8)).save(buffer, format='PNG')
  return buffer.getvalue()


class EncodedImages:
  """A split's images as a read-only (N, size, size, 3) uint8 array decoded on access.

  `read(i)` returns image i's encoded bytes (raising `OSError` when it cannot
  be read) and `names[i]` names it in messages. Indexing decodes and centre-
  crops (in `num_threads` threads); `open(i)` gives the full decoded image
  for training crops, or None when it is bad (reported to `bad_records`).
  A bad image read through indexing (evaluation) becomes a black image,
  so that every gallery row keeps its place; it is reported all the same.
  """

  def __init__(self, read, names, size, bad_records, num_threads=1):
    self.read = read
    self.names = names
    self.size = size
    self.bad_records = bad_records
    self.num_threads = max(int(num_threads), 1)
    self.shape = (len(names), size, size, 3)
    self.dtype = np.dtype(np.uint8)

  def __len__(self):
    return len(self.names)

  def open(self, index, min_size=None, epoch=None):
    """Image `index` decoded (PIL, RGB), or None when missing or corrupt (reported)."""
    try:
      encoded = self.read(index)
    except OSError as e:
      self.bad_records.report('missing_image', self.names[index], str(e), epoch)
      return None
    try:
      return open_image(encoded, min_size)
    except BadImage as e:
      self.bad_records.report('corrupt_image', self.names[index], str(e), epoch)
      return None

  def _centre_crop(self, index):
    image = self.open(int(index), self.size)
    if image is None:
      return np.zeros((self.size, self.size, 3), np.uint8)
    return centre_crop(image, self.size)

  def __getitem__(self, index):
    if isinstance(index, (int, np.integer)):
      return self._centre_crop(index)
    rows = np.arange(len(self))[index]
    if not len(rows):
      return np.zeros((0,) + self.shape[1:], np.uint8)
    if self.num_threads == 1 or len(rows) == 1:
      return np.stack([self._centre_crop(i) for i in rows])
    with concurrent.futures.ThreadPoolExecutor(self.num_threads) as pool:
      return np.stack(list(pool.map(self._centre_crop, rows)))

  def __array__(self, dtype=None, copy=None):
    del copy
    return self[:].astype(dtype) if dtype is not None else self[:]

"""The gallery's pictures by id, for the web page's thumbnails: PNG images, animated WebP clips.

Images come from the data source's split that the index was built from, and
from images added through the service, which are kept under
`DIR/gallery/added/` (one PNG per id, named by a digest of the id). A video
gallery's clips are shown by the animated thumbnails `--mode=index` made
(`index/thumbnails.py`); a clip without one (an index made before them) is
encoded the same way on first request.
"""

import functools
import io
import os
import threading

from absl import logging
import numpy as np
from PIL import Image

from jaxret import files
from jaxret.data import sources
from jaxret.index import thumbnails as thumbnails_lib

PNG = 'image/png'


def _png(image):
  buffer = io.BytesIO()
  Image.fromarray(np.asarray(image, np.uint8)).save(buffer, format='PNG')
  return buffer.getvalue()


class Gallery:
  """`picture(image_id)` -> (bytes, media type) or None. `load_records()` is called once, on
  first use; `thumbnails` are a video gallery's stored animated thumbnails (or None)."""

  def __init__(self, load_records, added_dir, thumbnails=None):
    self._load_records = load_records
    self._records = None
    self._row_of = None
    self._lock = threading.Lock()
    self.added_dir = added_dir
    self.thumbnails = thumbnails
    self._encoded = functools.lru_cache(maxsize=4096)(self._encode_row)

  def _ensure_loaded(self):
    with self._lock:
      if self._row_of is None:
        try:
          self._records = self._load_records()
          self._row_of = {image_id: row
                          for row, image_id in enumerate(self._records.image_ids.tolist())}
        except Exception as e:  # pylint: disable=broad-except
          # No images from the data source (e.g. an index of outside embeddings):
          # thumbnails are missing, search still works.
          logging.warning('no gallery images from the data source (%s); thumbnails will be '
                          'missing', e)
          self._row_of = {}

  def _encode_row(self, row):
    item = np.asarray(self._records.images[row])
    if item.ndim == 4:  # A clip (T, H, W, 3).
      return thumbnails_lib.encode(item), thumbnails_lib.MEDIA_TYPE
    return _png(item), PNG

  def _added_path(self, image_id):
    return os.path.join(self.added_dir, f'{thumbnails_lib.id_digest(image_id)}.png')

  def picture(self, image_id):
    path = self._added_path(image_id)
    if os.path.exists(path):
      with open(path, 'rb') as f:
        return f.read(), PNG
    stored = None if self.thumbnails is None else self.thumbnails.get(image_id)
    if stored is not None:
      return stored, thumbnails_lib.MEDIA_TYPE
    self._ensure_loaded()
    row = self._row_of.get(image_id)
    return None if row is None else self._encoded(row)

  def add(self, image_id, image):
    """Keeps an added item's image (uint8 (H, W, 3)); written atomically."""
    files.write_bytes(self._added_path(image_id), _png(image))

  def remove(self, image_id):
    path = self._added_path(image_id)
    if os.path.exists(path):
      os.remove(path)


def for_workdir(config, workdir, split):
  """The gallery of the index in `workdir`: the data source's `split`, the items added
  through the service, and the thumbnails `--mode=index` made (refused if damaged)."""
  return Gallery(lambda: sources.load_split(config.data, split),
                 os.path.join(workdir, 'gallery', 'added'),
                 thumbnails_lib.load(thumbnails_lib.directory(workdir)))

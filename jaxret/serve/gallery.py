"""The gallery's images by id, as PNG, for the web page's thumbnails.

Images come from the data source's split that the index was built from, and
from images added through the service, which are kept under
`DIR/gallery/added/` (one PNG per id, named by a hash of the id).
"""

import functools
import hashlib
import io
import os
import threading

from absl import logging
import numpy as np
from PIL import Image

from jaxret import files


def _png(image):
  buffer = io.BytesIO()
  Image.fromarray(np.asarray(image, np.uint8)).save(buffer, format='PNG')
  return buffer.getvalue()


class Gallery:
  """`png(image_id)` -> bytes or None. `load_records()` is called once, on first use."""

  def __init__(self, load_records, added_dir):
    self._load_records = load_records
    self._records = None
    self._row_of = None
    self._lock = threading.Lock()
    self.added_dir = added_dir
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
    return _png(self._records.images[row])

  def _added_path(self, image_id):
    digest = hashlib.sha256(f'{type(image_id).__name__}:{image_id}'.encode()).hexdigest()[:32]
    return os.path.join(self.added_dir, f'{digest}.png')

  def png(self, image_id):
    path = self._added_path(image_id)
    if os.path.exists(path):
      with open(path, 'rb') as f:
        return f.read()
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

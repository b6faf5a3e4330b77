"""Animated thumbnails of a video gallery, made by `--mode=index`: `DIR/thumbnails/`.

The web page shows each clip as a small animated WebP (`encode`): its frames in
order, FRAME_MS each, looping, at most MAX_SIZE pixels a side. They are made
once, when the index is built, so that serving never decodes a video (a real
gallery's files need not even be on the server). WebP's encoder stores
identical consecutive frames once, with their durations added: an animation
lasts the clip's T frame times but may hold fewer frames.

Files: one `<digest of the id>.webp` per clip and `manifest.json` (the split,
item count, frames per clip, frame time, bytes in all and a SHA-256 of every
file). `save` replaces the folder atomically; `load` refuses a damaged one.
"""

import hashlib
import io
import json
import os

import numpy as np
from PIL import Image

from jaxret import files
from jaxret.index import store

SUBDIR = 'thumbnails'
MEDIA_TYPE = 'image/webp'
FRAME_MS = 250
MAX_SIZE = 128
QUALITY = 80  # Lossy WebP: a 128-pixel, 8-frame clip of real video in a few tens of KB.


def directory(workdir):
  return os.path.join(workdir, SUBDIR)


def id_digest(image_id):
  """A file-name-safe name of a gallery id (ints and strings never collide)."""
  return hashlib.sha256(f'{type(image_id).__name__}:{image_id}'.encode()).hexdigest()[:32]


def _file_name(image_id):
  return f'{id_digest(image_id)}.webp'


def encode(clip):
  """uint8 (T, H, W, 3) frames -> the bytes of a looping animated WebP."""
  clip = np.asarray(clip, np.uint8)
  height, width = clip.shape[1:3]
  scale = min(1.0, MAX_SIZE / max(height, width))
  size = (max(1, round(width * scale)), max(1, round(height * scale)))
  frames = [Image.fromarray(frame) for frame in clip]
  if scale < 1:
    frames = [frame.resize(size, Image.BILINEAR) for frame in frames]
  buffer = io.BytesIO()
  frames[0].save(buffer, format='WEBP', save_all=True, append_images=frames[1:],
                 duration=FRAME_MS, loop=0, quality=QUALITY)
  return buffer.getvalue()


def save(out_dir, image_ids, clips, split):
  """Writes one thumbnail per id (`clips`: their (T, H, W, 3) frames, in the same order,
  read one at a time) and replaces `out_dir` whole; returns the manifest."""
  count, frames, total = 0, None, 0
  with files.staged_directory(out_dir) as staging:
    for image_id, clip in zip(image_ids, clips):
      data = encode(clip)
      with open(os.path.join(staging, _file_name(image_id)), 'wb') as f:
        f.write(data)
      count, frames, total = count + 1, len(clip), total + len(data)
    manifest = {'split': split, 'num_items': count, 'frames_per_clip': frames,
                'frame_ms': FRAME_MS, 'format': 'webp', 'bytes': total,
                'checksums': store.checksums(staging)}
    with open(os.path.join(staging, store.MANIFEST), 'w') as f:
      json.dump(manifest, f, indent=2)
  return manifest


class Thumbnails:
  """A gallery's animated thumbnails: `get(image_id)` -> WebP bytes, or None."""

  def __init__(self, out_dir, manifest):
    self.directory = out_dir
    self.manifest = manifest

  def get(self, image_id):
    path = os.path.join(self.directory, _file_name(image_id))
    if not os.path.exists(path):
      return None
    with open(path, 'rb') as f:
      return f.read()


def load(out_dir):
  """The thumbnails in `out_dir` (checked against their manifest), or None if there are none."""
  if not os.path.isdir(out_dir):
    return None
  return Thumbnails(out_dir, store.verified_manifest(
      out_dir, 'animated thumbnails', f'no {store.MANIFEST} in {out_dir}; rebuild them with '
      '--mode=index'))

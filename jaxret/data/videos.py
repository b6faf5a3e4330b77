"""Video decoding with PyAV, and the lazily decoded clip array of a real split.

A video file becomes `num_frames` frames sampled uniformly over its length
(frame i of T is the one at the middle of the i-th of T equal stretches),
each resized so that its shorter side is `size` and centre-cropped to a
square: (T, size, size, 3) uint8. Frames are shrunk as they are decoded, so a
long video never sits in memory at full size. A video with fewer frames than
T is padded by repeating frames (`data.short_clip='pad'`: the same uniform
sampling, which then takes some frames twice) or refused as bad ('refuse').
"""

import concurrent.futures
import io

import av
import numpy as np
from PIL import Image

from jaxret.data import images as images_lib

SHORT_CLIP = ('pad', 'refuse')


class BadVideo(Exception):
  """A video that cannot be read or decoded; `kind` is its bad-record kind."""

  def __init__(self, message, kind='corrupt_video'):
    super().__init__(message)
    self.kind = kind


def sample_indices(count, num_frames):
  """The `num_frames` frame indices (of `count`) at the middles of equal stretches."""
  return np.minimum(((np.arange(num_frames) + 0.5) * count / num_frames).astype(int), count - 1)


def _square(frame, size):
  """A decoded frame -> (size, size, 3) uint8: shorter side to `size`, centre square."""
  width, height = frame.width, frame.height
  if width < 1 or height < 1:
    raise BadVideo('a frame is empty')
  scale = size / min(width, height)
  small = frame.reformat(width=max(size, round(width * scale)),
                         height=max(size, round(height * scale)), format='rgb24')
  image = Image.fromarray(small.to_ndarray())
  return images_lib.centre_crop(image, size)


def decode_clip(encoded, num_frames, size, short_clip='pad'):
  """Encoded video bytes -> (num_frames, size, size, 3) uint8; raises `BadVideo`."""
  if not encoded:
    raise BadVideo('empty file')
  try:
    with av.open(io.BytesIO(encoded)) as container:
      if not container.streams.video:
        raise BadVideo('no video stream')
      frames = [_square(f, size) for f in container.decode(video=0)]
  except BadVideo:
    raise
  except Exception as e:  # pylint: disable=broad-except
    raise BadVideo(f'{type(e).__name__}: {e}') from e
  if not frames:
    raise BadVideo('no frames')
  if len(frames) < num_frames and short_clip == 'refuse':
    raise BadVideo(f'{len(frames)} frames, fewer than data.num_frames={num_frames}',
                   kind='short_video')
  return np.stack([frames[i] for i in sample_indices(len(frames), num_frames)])


def encode_mp4(frames, fps=8):
  """(T, H, W, 3) uint8 frames -> the bytes of an H.264 .mp4 (for tests and examples)."""
  frames = np.asarray(frames, np.uint8)
  buffer = io.BytesIO()
  with av.open(buffer, mode='w', format='mp4') as container:
    stream = container.add_stream('libx264', rate=fps)
    stream.width, stream.height = frames.shape[2], frames.shape[1]
    stream.pix_fmt = 'yuv420p'
    for array in frames:
      container.mux(stream.encode(av.VideoFrame.from_ndarray(array, format='rgb24')))
    container.mux(stream.encode())
  return buffer.getvalue()


class EncodedClips:
  """A split's videos as a read-only (N, T, size, size, 3) uint8 array decoded on access.

  `read(i)` returns video i's bytes (raising `OSError` when it cannot be read);
  `names[i]` names it in messages. `open(i)` gives the decoded clip, or None
  when it is bad (reported to `bad_records`), for training, which skips it;
  indexing (evaluation) gives a black clip instead, so that every gallery row
  keeps its place, and reports it all the same.
  """

  def __init__(self, read, names, num_frames, size, bad_records, short_clip='pad',
               num_threads=1):
    self.read = read
    self.names = names
    self.num_frames = num_frames
    self.size = size
    self.bad_records = bad_records
    self.short_clip = short_clip
    self.num_threads = max(int(num_threads), 1)
    self.shape = (len(names), num_frames, size, size, 3)
    self.dtype = np.dtype(np.uint8)

  def __len__(self):
    return len(self.names)

  def open(self, index, epoch=None):
    """Clip `index`, or None when missing, corrupt or too short to use (reported)."""
    try:
      encoded = self.read(index)
    except OSError as e:
      self.bad_records.report('missing_video', self.names[index], str(e), epoch)
      return None
    try:
      return decode_clip(encoded, self.num_frames, self.size, self.short_clip)
    except BadVideo as e:
      self.bad_records.report(e.kind, self.names[index], str(e), epoch)
      return None

  def _clip(self, index):
    clip = self.open(int(index))
    return np.zeros(self.shape[1:], np.uint8) if clip is None else clip

  def __getitem__(self, index):
    if isinstance(index, (int, np.integer)):
      return self._clip(index)
    rows = np.arange(len(self))[index]
    if not len(rows):
      return np.zeros((0,) + self.shape[1:], np.uint8)
    if self.num_threads == 1 or len(rows) == 1:
      return np.stack([self._clip(i) for i in rows])
    with concurrent.futures.ThreadPoolExecutor(self.num_threads) as pool:
      return np.stack(list(pool.map(self._clip, rows)))

  def __array__(self, dtype=None, copy=None):
    del copy
    return self[:].astype(dtype) if dtype is not None else self[:]

"""The query-side encoders: texts checked and tokenised, embedded in compiled buckets.

The text tower is compiled once per (batch size, text length) bucket and
warmed up before the server accepts requests, so no request pays for a
compilation. Cutting trailing padding down to a length bucket does not change
an embedding (padding is masked out of attention and pooling); `warm_up`
checks that on the model it serves.
"""

import time

import jax
import numpy as np

from jaxret import errors
from jaxret.data import options as data_options
from jaxret.data import pipeline
from jaxret.models import capabilities

BATCH_BUCKETS = (1, 8, 64)
MAX_QUERY_CHARS = 1000


def length_buckets(max_len, smallest=8):
  """Powers of two from `smallest` up to, and then including, `max_len`."""
  buckets, length = [], smallest
  while length < max_len:
    buckets.append(length)
    length *= 2
  return tuple(buckets) + (max_len,)


def bucket(size, buckets):
  """The smallest bucket that holds `size` (`size` must be <= the largest)."""
  return next(b for b in buckets if b >= size)


def check_text(text, max_chars=MAX_QUERY_CHARS):
  """Refuses what cannot be a query: not a string, empty, over-long, not valid Unicode."""
  if not isinstance(text, str):
    raise errors.UserError(f'a query must be a string, not {type(text).__name__}')
  if not text.strip():
    raise errors.UserError('empty query: pass a description, e.g. q=a red circle')
  if len(text) > max_chars:
    raise errors.UserError(f'query is {len(text)} characters long; the limit is {max_chars}')
  try:
    text.encode('utf-8')
  except UnicodeEncodeError:
    raise errors.UserError('query is not valid Unicode (it has a lone surrogate)') from None


class TextEncoder:
  """Texts -> (N, D) unit vectors with the model's text tower, on one device.

  `prepare(texts)` checks and tokenises in the caller's thread (so bad input is
  refused before it is queued) and returns an (N, 2, L) int32 array of tokens
  and mask; `embed(prepared)` runs the compiled tower on it.
  """

  def __init__(self, model, params, tokenizer, batch_buckets=BATCH_BUCKETS,
               max_chars=MAX_QUERY_CHARS):
    capabilities.require(model, capabilities.PooledEncoder, 'serving text queries')
    self.params = params
    self.tokenizer = tokenizer
    self.max_len = tokenizer.max_len
    self.batch_buckets = tuple(batch_buckets)
    self.length_buckets = length_buckets(self.max_len)
    self.max_chars = max_chars
    self._encode = jax.jit(lambda params, tokens, mask: model.apply(
        {'params': params}, tokens, mask, method=model.encode_text)[0])

  def prepare(self, texts):
    for text in texts:
      check_text(text, self.max_chars)
    encodings = self.tokenizer.backend.encode_batch(list(texts))
    for text, encoding in zip(texts, encodings):
      if encoding.overflowing:
        raise errors.UserError(
            f'query is too long for the model: it reads at most {self.max_len} tokens '
            f'(with its start and end tokens); shorten {text[:40]!r}...')
    tokens = np.array([e.ids for e in encodings], np.int32).reshape(-1, self.max_len)
    mask = np.array([e.attention_mask for e in encodings], np.int32).reshape(-1, self.max_len)
    return np.stack([tokens, mask], axis=1)

  def _embed_bucket(self, tokens, mask):
    length = bucket(max(int(mask.sum(axis=1).max()), 1), self.length_buckets)
    size = bucket(len(tokens), self.batch_buckets)
    pad = size - len(tokens)
    tokens = np.pad(tokens[:, :length], ((0, pad), (0, 0)))
    mask = np.pad(mask[:, :length], ((0, pad), (0, 0)))
    return np.asarray(self._encode(self.params, tokens, mask))[:size - pad]

  def embed(self, prepared):
    """(N, 2, L) tokens and mask -> (N, D) float32."""
    largest = self.batch_buckets[-1]
    return np.concatenate([
        self._embed_bucket(prepared[start:start + largest, 0], prepared[start:start + largest, 1])
        for start in range(0, len(prepared), largest)])

  def embed_texts(self, texts):
    return self.embed(self.prepare(texts))

  def warm_up(self, probe_text='a red circle'):
    """Compiles every bucket; checks that length buckets leave embeddings unchanged.

    Returns the seconds it took.
    """
    start = time.time()
    prepared = self.prepare([probe_text])
    for size in self.batch_buckets:
      for length in self.length_buckets:
        tokens = np.repeat(prepared[:, 0, :length], size, axis=0)
        mask = np.repeat(prepared[:, 1, :length], size, axis=0)
        jax.block_until_ready(self._encode(self.params, tokens, mask))
    full = np.asarray(self._encode(self.params, prepared[:, 0], prepared[:, 1]))
    cut = self.embed(prepared)
    if not np.allclose(full, cut, atol=1e-4):
      raise RuntimeError('the text tower changes its output when trailing padding is cut off; '
                         'length buckets cannot be used with this model')
    return time.time() - start


class ImageEncoder:
  """uint8 (N, H, W, 3) images -> (N, D) unit vectors, for adding items to a served index
  (refused for a video gallery: its tower takes clips).

  Compiled on first use (for batches of up to `batch` images), not at start:
  adding items is rare next to searching.
  """

  def __init__(self, model, params, data_config, batch=8):
    capabilities.require(model, capabilities.PooledEncoder, 'adding images to a served index')
    self.params = params
    self.data_config = data_config
    self.image_size = data_config.image_size
    self.batch = batch
    self._encode = jax.jit(lambda params, images: model.apply(
        {'params': params}, images, method=model.encode_image)[0])

  def embed(self, images):
    if data_options.resolve(self.data_config).num_frames:
      raise errors.UserError('this gallery holds video clips, and an image is not a clip: '
                             'search with a text or an "image_id", add items by "embedding"')
    outputs = []
    for start in range(0, len(images), self.batch):
      chunk = pipeline.normalize_images(np.asarray(images[start:start + self.batch]),
                                        self.data_config)
      pad = self.batch - len(chunk)
      chunk = np.pad(chunk, ((0, pad), (0, 0), (0, 0), (0, 0)))
      outputs.append(np.asarray(self._encode(self.params, chunk))[:self.batch - pad])
    return np.concatenate(outputs)

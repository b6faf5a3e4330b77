"""Static shapes for jit: padding batches up to the smallest bucket that fits, and the
scorers' shared base that encodes images in fixed-size batches."""

import numpy as np

from jaxret.data import pipeline


def bucket(size, buckets):
  """The smallest bucket >= size (the largest one if none is)."""
  for b in sorted(buckets):
    if size <= b:
      return b
  return max(buckets)


def pad_rows(array, size):
  """`array` with its last row repeated (or cut) to `size` rows."""
  if len(array) >= size:
    return array[:size]
  return np.concatenate([array, np.repeat(array[-1:], size - len(array), axis=0)])


def trim_length(tokens, mask, length_buckets):
  """Cuts trailing padding down to a length bucket (padding never changes a score)."""
  longest = int(np.max(np.sum(mask > 0, axis=1))) if len(mask) else 1
  length = min(bucket(longest, length_buckets), tokens.shape[1])
  return tokens[:, :length], mask[:, :length]


def length_probes(tokens, mask, length_buckets):
  """One (tokens (1, L), mask (1, L)) query per caption-length bucket, shortest first:
  `tokens`' first row with its mask widened to the bucket's length (at most L). A query
  scored alone runs its bucket's program (`trim_length`), so scoring each probe once
  compiles every program a loop over any captions can run; the probes' scores mean
  nothing."""
  probes = []
  for length in sorted(length_buckets):
    probe = np.zeros_like(mask[:1])
    probe[:, :min(length, mask.shape[1])] = 1
    probes.append((tokens[:1], probe))
  return probes


class BucketedScorer:
  """What the slow and the token-wise scorers share: the parameters, the buckets that keep
  shapes static, images encoded `image_batch` at a time, and `compilations` (the programs
  traced so far)."""

  def __init__(self, params, data_config, *, image_batch, candidate_buckets, length_buckets):
    self.params = params
    self.data_config = data_config
    self.image_batch = image_batch
    self.candidate_buckets = tuple(candidate_buckets)
    self.length_buckets = tuple(length_buckets)
    self.compilations = 0

  def encode_images(self, encode, images):
    """`encode` (normalised (image_batch, H, W, 3) images -> array) over uint8 `images`,
    image_batch at a time so that it compiles once; numpy, concatenated, padding dropped."""
    out = []
    for start in range(0, len(images), self.image_batch):
      chunk = np.asarray(images[start:start + self.image_batch])
      padded = pad_rows(chunk, self.image_batch)
      normalised = pipeline.normalize_images(padded, self.data_config)
      out.append(np.asarray(encode(normalised))[:len(chunk)])
    return np.concatenate(out)

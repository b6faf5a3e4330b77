"""Static shapes for jit: padding batches up to the smallest bucket that fits."""

import numpy as np


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

"""Split specifications: 'train+restval', 'test[0:1000]' (TFDS's syntax, also used by
the Karpathy and webdataset sources)."""

import re

from jaxret import errors

_PART = re.compile(r'^\s*([\w.-]+)\s*(?:\[\s*(-?\d*)\s*:\s*(-?\d*)\s*\])?\s*$')


def lookup(splits, split):
  """`splits[split]`: the source's split spec for jaxret split `split`."""
  if split not in splits:
    raise errors.UserError(f'no data.splits entry for split {split!r}; '
                           f'known: {", ".join(splits)} (add --config.data.splits.{split}=...)')
  return splits[split]


def parse(spec):
  """'train+restval' -> [('train', slice(None)), ('restval', slice(None))]."""
  parts = []
  for item in spec.split('+'):
    match = _PART.match(item)
    if not match:
      raise errors.UserError(f'bad split spec {spec!r}: use NAME, NAME[a:b] or A+B')
    name, start, stop = match.groups()
    parts.append((name, slice(int(start) if start else None, int(stop) if stop else None)))
  return parts

"""Accounting for bad input: counted per epoch, logged with the file name, skipped or fatal.

Kinds: a missing or corrupt image or video, a video with too few frames
(`data.short_clip='refuse'`), an empty caption, an entry without
captions, a sample missing its image or caption, a shard that ends mid-record.
Records found bad while a split loads are dropped from it (and reported once);
images found bad while decoding are skipped in the batch they would have been
in. With `data.on_bad_record='error'` the first bad record raises instead.
"""

import collections
import sys
import threading

from jaxret import errors

# Log at most this many bad records of one kind per epoch by name; count the rest.
LOG_LIMIT = 20

KINDS = {
    'missing_image': 'missing image',
    'corrupt_image': 'corrupt image',
    'empty_caption': 'empty caption',
    'no_captions': 'entry without captions',
    'incomplete_sample': 'sample without image or caption',
    'truncated_shard': 'shard ending mid-record',
    'missing_video': 'missing video',
    'corrupt_video': 'corrupt video',
    'short_video': 'video shorter than data.num_frames',
}


class BadRecordError(errors.UserError):
  """A bad record with `data.on_bad_record='error'`."""


def _print(message):
  print(f'data: {message}', file=sys.stderr, flush=True)


class BadRecords:
  """Thread-safe counts of bad records by (epoch, kind); epoch None: found while loading."""

  def __init__(self, policy='skip', name='', log=_print):
    self.policy = policy
    self.name = name  # Prefixes messages, e.g. 'train'.
    self.log = log
    self.counts = collections.Counter()
    self._lock = threading.Lock()
    self._summarised = set()
    self._seen = set()

  def report(self, kind, where, detail='', epoch=None):
    """Counts bad record `where` (a file name) of `kind` once per epoch; raises under
    policy 'error'."""
    if kind not in KINDS:
      raise ValueError(f'unknown bad-record kind {kind!r}')
    message = f'{KINDS[kind]}: {where}' + (f' ({detail})' if detail else '')
    if self.policy == 'error':
      raise BadRecordError(f'{self.name + " " if self.name else ""}{message}; '
                           "pass --config.data.on_bad_record=skip to skip bad records")
    with self._lock:
      if (epoch, kind, where) in self._seen:
        return  # Once per file and epoch (an image has several captions, so several pairs).
      self._seen.add((epoch, kind, where))
      self.counts[epoch, kind] += 1
      count = self.counts[epoch, kind]
    if count <= LOG_LIMIT:
      self.log(f'skipped {message}')
    elif count == LOG_LIMIT + 1:
      self.log(f'more than {LOG_LIMIT} {KINDS[kind]}s'
               + (f' in epoch {epoch}' if epoch is not None else '') + '; counting the rest')

  def total(self, epoch='all'):
    with self._lock:
      return sum(c for (e, _), c in self.counts.items() if epoch == 'all' or e == epoch)

  def summary(self, epoch=None):
    """'2 corrupt images, 1 empty caption' for `epoch` (None: those found while loading)."""
    with self._lock:
      parts = [f'{c} {KINDS[k]}{"s" if c != 1 else ""}'
               for (e, k), c in sorted(self.counts.items(), key=lambda item: item[0][1])
               if e == epoch and c]
    return ', '.join(parts) if parts else 'none'

  def end_of_epoch(self, epoch):
    """Logs the summary of `epoch` once (the records dropped while loading are not in it)."""
    if epoch in self._summarised:
      return
    self._summarised.add(epoch)
    prefix = f'{self.name} ' if self.name else ''
    self.log(f'{prefix}epoch {epoch} done; bad records skipped in it: {self.summary(epoch)}'
             + f' (dropped while loading: {self.summary(None)})')

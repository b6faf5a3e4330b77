"""A first-in-first-out queue of past keys (MoCo, WenLan, ALBEF), as arrays.

A queue is a dict: `ptr` (scalar int32, the next slot to write), `ids` (K,)
int32 image ids, and one (K, D) array per named feature (e.g. `image`,
`text`). Slots never written hold `EMPTY_ID`, which no real image id equals
(ids are rows of a split, >= 0), so an empty slot never matches a query and
the losses drop it from their softmax (`valid`).

The queue lives in an objective's extra training state, replicated: every
device holds the whole queue. `enqueue` writes a GLOBAL batch of keys
(stop-gradient): called under `jit` on the batch-sharded key arrays, it
all-gathers them into the replicated queue, so every device writes the same
rows at the same place and the queues stay identical. The pointer advances
by the global batch modulo K, which must be a multiple of the global batch,
so a batch never wraps around the end: after k <= K/B enqueues, slots
[ptr − k·B, ptr) (mod K) hold the last k global batches, oldest first.
"""

import jax
from jax import lax
import jax.numpy as jnp

from jaxret import errors

EMPTY_ID = -1


def init(size, feature_dims, dtype=jnp.float32):
  """An empty queue of `size` slots with a (size, dim) array per `feature_dims` entry."""
  if size <= 0:
    raise errors.UserError(f'queue size must be positive, got {size}')
  queue = {'ptr': jnp.zeros((), jnp.int32), 'ids': jnp.full((size,), EMPTY_ID, jnp.int32)}
  for name, dim in feature_dims.items():
    queue[name] = jnp.zeros((size, dim), dtype)
  return queue


def size(queue):
  return queue['ids'].shape[0]


def check_size(queue_size, global_batch, what='loss.queue_size'):
  """Refuses a queue that the global batch does not tile (a batch would wrap around)."""
  if queue_size % global_batch:
    lower = max(queue_size - queue_size % global_batch, global_batch)
    raise errors.UserError(
        f'{what}={queue_size} is not a multiple of the global batch size {global_batch}; '
        f'use e.g. --config.{what}={lower}')


def valid(queue):
  """(K,) bool: slots that hold a key (written at least once)."""
  return queue['ids'] != EMPTY_ID


def enqueue(queue, ids, **features):
  """Writes a global batch (`ids` (B,), each feature (B, D)) at `ptr`; ptr += B mod K.

  Keys are stop-gradient: nothing flows back into the encoders that made them.
  """
  queue_size, batch = size(queue), ids.shape[0]
  check_size(queue_size, batch)
  missing = set(queue) - {'ptr', 'ids'} - set(features)
  if missing or set(features) - set(queue):
    raise ValueError(f'enqueue needs exactly the features {sorted(set(queue) - {"ptr", "ids"})}, '
                     f'got {sorted(features)}')
  ptr = queue['ptr']
  updated = {'ptr': (ptr + batch) % queue_size,
             'ids': lax.dynamic_update_slice(queue['ids'], ids.astype(jnp.int32), (ptr,))}
  for name, keys in features.items():
    keys = lax.stop_gradient(keys).astype(queue[name].dtype)
    updated[name] = lax.dynamic_update_slice(queue[name], keys, (ptr, 0))
  return updated


def oldest_first(queue):
  """The queue's contents in insertion order, oldest first (slots ptr..K-1, then 0..ptr-1)."""
  order = (jnp.arange(size(queue)) + queue['ptr']) % size(queue)
  return jax.tree.map(lambda x: x[order] if x.ndim else x, queue)

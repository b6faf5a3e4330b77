"""A first-in-first-out queue of past keys (MoCo, WenLan, ALBEF), as arrays.

A queue is a dict: `ptr` (scalar int32, the next slot to write), `ids` (K,)
int32 image ids, and one (K, D) array per named feature (e.g. `image`,
`text`). A queue starts either with random unit keys (MoCo, ALBEF and BriVL
do so) under `RANDOM_ID`, which count as negatives from the first step, or
empty: slots under `EMPTY_ID`, which the losses drop from their softmax
(`valid`). No real image id equals either (ids are rows of a split, >= 0), so
an initial slot never matches a query.

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

EMPTY_ID = -1  # A slot never written: left out of every softmax.
RANDOM_ID = -2  # A random initial key: a negative for every query until overwritten.


def init(size, feature_dims, dtype=jnp.float32, rng=None):
  """A queue of `size` slots with a (size, dim) array per `feature_dims` entry.

  With `rng`, every slot holds a random unit key (a normalised Gaussian, as in
  MoCo, ALBEF and BriVL) under `RANDOM_ID`, so the first steps already have
  negatives; without, the slots are empty (`EMPTY_ID`, zeros).
  """
  if size <= 0:
    raise errors.UserError(f'queue size must be positive, got {size}')
  initial_id = EMPTY_ID if rng is None else RANDOM_ID
  queue = {'ptr': jnp.zeros((), jnp.int32), 'ids': jnp.full((size,), initial_id, jnp.int32)}
  for name, dim in feature_dims.items():
    if rng is None:
      queue[name] = jnp.zeros((size, dim), dtype)
    else:
      rng, key_rng = jax.random.split(rng)
      keys = jax.random.normal(key_rng, (size, dim), jnp.float32)
      queue[name] = (keys / jnp.linalg.norm(keys, axis=-1, keepdims=True)).astype(dtype)
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
  """(K,) bool: slots whose key counts (written, or a random initial key)."""
  return queue['ids'] != EMPTY_ID


def fill(queue_ids):
  """The fraction of slots holding keys of real images (written at least once)."""
  return jnp.mean((queue_ids >= 0).astype(jnp.float32))


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

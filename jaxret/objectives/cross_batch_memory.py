"""A cross-batch memory (Wang et al. 2020, XBM): a ring buffer of past global batches.

The memory is a dict of arrays with a leading slot axis of size K (embeddings,
labels; label −1 marks an empty slot) plus `ptr`, the next slot to write. It
lives in the train state's `extra`, replicated: every device holds all of it.
"""

import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import jax.numpy as jnp

from jaxret import errors

EMPTY_LABEL = -1


def init(size, embedding_dims):
  """An empty memory of `size` slots with one (size, dim) array per named embedding."""
  memory = {name: jnp.zeros((size, dim), jnp.float32) for name, dim in embedding_dims.items()}
  memory['label'] = jnp.full((size,), EMPTY_LABEL, jnp.int32)
  memory['ptr'] = jnp.zeros((), jnp.int32)
  return memory


def size(memory):
  return memory['label'].shape[0]


def enqueue(memory, entries, enabled, mesh=None):
  """Writes the global batch `entries` (same keys as `memory` but `ptr`) at
  slots ptr, ptr+1, ... (mod K), oldest first, and advances `ptr` by the
  global batch; does nothing when `enabled` (a traced bool) is false.

  Entries are stop-gradient constants and, with a `mesh`, gathered from every
  device before the write, so the memory is identical everywhere.

  Returns:
    (memory, slots): `slots` (N,) is where each row of the batch was written,
    or −1 for every row when nothing was written.
  """
  batch = entries['label'].shape[0]
  capacity = size(memory)
  if batch > capacity:
    raise errors.UserError(f'the memory has {capacity} slots but the global batch is {batch}; '
                           'use a memory size of at least the global batch')
  entries = jax.lax.stop_gradient(entries)
  if mesh is not None:
    entries = jax.lax.with_sharding_constraint(entries, NamedSharding(mesh, P()))
  slots = (memory['ptr'] + jnp.arange(batch)) % capacity
  written = {name: memory[name].at[slots].set(entries[name].astype(memory[name].dtype))
             for name in entries}
  written['ptr'] = (memory['ptr'] + batch) % capacity
  memory = jax.tree.map(lambda new, old: jnp.where(enabled, new, old), written, memory)
  return memory, jnp.where(enabled, slots, -1)


def in_order(memory):
  """The memory's slots rolled so that the oldest entry comes first (for tests
  and inspection): after k writes of batches B1..Bk (k·N <= K) into an empty
  memory, the filled slots read B1, ..., Bk."""
  return {name: jnp.roll(value, -memory['ptr'], axis=0)
          for name, value in memory.items() if name != 'ptr'}

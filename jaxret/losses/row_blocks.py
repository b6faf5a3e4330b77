"""Row-separable sums taken a block of rows at a time.

A loss that is a sum over a device's rows, each row depending on its own
inputs and on columns shared by all rows (queries against momentum keys and
a queue: MoCo, ALBEF's ITC and hard-negative draws; IRT's anchors against
the batch and the memory; FILIP's token-wise similarities), need not hold the
device's whole (rows × columns) arrays: each block of at most `ROWS` rows
(FILIP: `rows_within`) is scored, summed and, for the gradient, scored again
(`jax.checkpoint`), so the arrays in memory are a block's, whatever the
batch. The columns' gradient is summed over the blocks. The sums equal the
one-block sums up to float32 rounding.
"""

import jax
from jax import lax
import jax.numpy as jnp

ROWS = 64
# For losses whose per-row arrays are large (FILIP's token similarities): elements a block.
ELEMENTS = 1 << 22


def block_size(rows, most=None):
  """The largest divisor of `rows` that is at most `most` (default `ROWS`)."""
  most = ROWS if most is None else most
  return max(d for d in range(1, min(rows, most) + 1) if rows % d == 0)


def _blocks(rows, most):
  """`rows` (a tree of (n, ...) arrays) as (n / size, size, ...) blocks, or None for one."""
  n = jax.tree.leaves(rows)[0].shape[0]
  size = block_size(n, most)
  if size == n:
    return None
  return jax.tree.map(lambda x: x.reshape(n // size, size, *x.shape[1:]), rows)


def block_sums(fn, rows, shared=(), most=None):
  """Σ over blocks of `rows` (a tree of (n, ...) arrays) of `fn(block, shared)`, a tree
  of sums; `shared` (the columns) is passed to every block whole."""
  blocks = _blocks(rows, most)
  if blocks is None:
    return fn(rows, shared)
  one = jax.checkpoint(fn)

  def add(total, block):
    return jax.tree.map(jnp.add, total, one(block, shared)), None

  # The first block's sums start the total (zeros would not vary over the devices
  # of a shard_map as the sums do).
  first, rest = (jax.tree.map(lambda x: x[0], blocks), jax.tree.map(lambda x: x[1:], blocks))
  total, _ = lax.scan(add, one(first, shared), rest)
  return total


def block_map(fn, rows, shared=(), most=None):
  """`fn(block, shared)` (a tree of per-row (size, ...) outputs) over the blocks of `rows`,
  concatenated back to (n, ...) (for draws: no gradient is taken through it)."""
  blocks = _blocks(rows, most)
  if blocks is None:
    return fn(rows, shared)
  out = lax.map(lambda block: fn(block, shared), blocks)
  return jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), out)


def rows_within(elements_per_row):
  """Rows per block so that a block's largest array holds about `ELEMENTS` elements."""
  return max(1, ELEMENTS // max(1, elements_per_row))

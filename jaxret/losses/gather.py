"""Cross-device helpers used by every loss.

Losses take an `axis_name`: under `shard_map` it names the mesh axis the batch
is split over, and the helpers gather along it; with `axis_name=None` they are
identities, so the same loss code runs on one device without a mesh.
`lax.all_gather` is differentiable: its transpose reduce-scatters the gradient,
so gathering columns with gradient gives the exact global gradient.
"""

import jax
from jax import lax
import jax.numpy as jnp


def all_gather(x, axis_name):
  """Concatenates every device's `x` along axis 0 (in device order)."""
  if axis_name is None:
    return x
  return lax.all_gather(x, axis_name, axis=0, tiled=True)


def all_gather_no_grad(x, axis_name):
  """`all_gather` with stop-gradient (for momentum keys and queues)."""
  return all_gather(lax.stop_gradient(x), axis_name)


def rotate(x, axis_name, shift=1):
  """Each device's `x` (a pytree) moves `shift` places along the ring of devices:
  device d receives what device d - shift held. Differentiable (the transpose
  rotates back), so chunked losses can pass columns around instead of gathering
  them all at once."""
  if axis_name is None:
    return x
  size = lax.axis_size(axis_name)
  perm = [(d, (d + shift) % size) for d in range(size)]
  return jax.tree.map(lambda v: lax.ppermute(v, axis_name, perm), x)


def axis_index(axis_name):
  return 0 if axis_name is None else lax.axis_index(axis_name)


def axis_size(axis_name):
  return 1 if axis_name is None else lax.axis_size(axis_name)


def psum(x, axis_name):
  if axis_name is None:
    return x
  return jax.tree.map(lambda v: lax.psum(v, axis_name), x)


def local_offset(local_size, axis_name):
  """Index of this device's first row in the gathered batch."""
  return axis_index(axis_name) * local_size


def same_id_targets(row_ids, column_ids):
  """Soft targets spreading each row's mass uniformly over columns with its id."""
  positives = (row_ids[:, None] == column_ids[None, :]).astype(jnp.float32)
  return positives / jnp.maximum(positives.sum(axis=1, keepdims=True), 1.0)

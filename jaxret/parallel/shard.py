"""Running a per-device function over the batch axis with explicit collectives."""

import functools

import jax
from jax.sharding import PartitionSpec as P

from jaxret.parallel import mesh as mesh_lib


def over_batch(fn, mesh, num_args, replicated_argnums=()):
  """`fn(*args, axis_name='data')` under `shard_map`, for use inside `jit`.

  Each of the `num_args` positional arguments (a pytree) is split along its
  leading axis over the `data` axis, except those in `replicated_argnums`, which
  every device sees whole. `fn` must return values that are the same on every
  device (psum-ed or gathered); they come back replicated.
  """
  in_specs = tuple(P() if i in replicated_argnums else P(mesh_lib.DATA_AXIS)
                   for i in range(num_args))
  return jax.shard_map(
      functools.partial(fn, axis_name=mesh_lib.DATA_AXIS),
      mesh=mesh, in_specs=in_specs, out_specs=P())

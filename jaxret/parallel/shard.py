"""Running a per-device function over the batch axes with explicit collectives."""

import functools

import jax
from jax.sharding import PartitionSpec as P

from jaxret.parallel import mesh as mesh_lib


def over_batch(fn, mesh, num_args, replicated_argnums=(), out_specs=None):
  """`fn(*args, axis_name=batch axes)` under `shard_map`, for use inside `jit`.

  Each of the `num_args` positional arguments (a pytree) is split along its
  leading axis over the mesh's batch axes, except those in `replicated_argnums`,
  which every device sees whole. By default `fn` must return values that are
  the same on every device (psum-ed), which come back replicated; pass
  `out_specs` (e.g. `batch_spec(mesh)` for per-device rows) to return others.
  """
  in_specs = tuple(P() if i in replicated_argnums else batch_spec(mesh)
                   for i in range(num_args))
  return jax.shard_map(
      functools.partial(fn, axis_name=mesh_lib.batch_axes(mesh)),
      mesh=mesh, in_specs=in_specs, out_specs=P() if out_specs is None else out_specs)


def batch_spec(mesh):
  return P(mesh_lib.batch_axes(mesh))

"""Running a per-device function over the batch axes with explicit collectives."""

import jax
from jax.sharding import PartitionSpec as P

from jaxret.parallel import mesh as mesh_lib


def over_batch(fn, mesh, replicated=(), out_specs=None):
  """`fn(**arguments, axis_name=batch axes)` under `shard_map`, for use inside `jit`.

  Returns a function called with keyword arguments only (those of `fn`, each a
  pytree). Every argument is split along its leading axis over the mesh's
  batch axes, except those named in `replicated`, which every device sees
  whole (a scale, a queue). By default `fn` must return values that are the
  same on every device (psum-ed), which come back replicated; pass `out_specs`
  (e.g. `batch_spec(mesh)` for per-device rows) to return others.
  """
  replicated = frozenset(replicated)
  axis_name = mesh_lib.batch_axes(mesh)

  def per_device(arguments):
    return fn(**arguments, axis_name=axis_name)

  def call(**arguments):
    missing = replicated - set(arguments)
    if missing:
      raise TypeError(f'replicated arguments {sorted(missing)} were not passed; '
                      f'got {sorted(arguments)}')
    in_specs = {name: P() if name in replicated else batch_spec(mesh) for name in arguments}
    return jax.shard_map(per_device, mesh=mesh, in_specs=(in_specs,),
                         out_specs=P() if out_specs is None else out_specs)(arguments)

  return call


def batch_spec(mesh):
  return P(mesh_lib.batch_axes(mesh))

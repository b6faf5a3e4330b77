"""The device mesh and the global-batch arithmetic derived from it.

`config.mesh` lists (axis name, size) pairs; one size may be -1 for "all the
remaining devices". The default `(('data', -1),)` is plain data parallelism,
and FSDP is a sharding rule that splits large parameters over that same axis
(ZeRO-3 style) -- a config change, not a code change. The batch is split over
every axis except one named `model`, which is left for parameter sharding.
"""

import math

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxret import errors

DATA_AXIS = 'data'
MODEL_AXIS = 'model'  # The only axis the batch is not split over.
DEFAULT_AXES = ((DATA_AXIS, -1),)


def mesh_shape(axes, num_devices):
  """Resolves the -1 in `axes` and checks that the mesh covers exactly the devices."""
  names = [name for name, _ in axes]
  sizes = [int(size) for _, size in axes]
  if len(set(names)) != len(names) or not names:
    raise errors.UserError(f'mesh axes {names} must be distinct and non-empty')
  if sizes.count(-1) > 1 or any(s == 0 or s < -1 for s in sizes):
    raise errors.UserError(f'mesh sizes {sizes} must be positive, with at most one -1')
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if num_devices % known:
      raise errors.UserError(
          f'mesh {dict(zip(names, sizes))} needs a multiple of {known} devices, but there are '
          f'{num_devices}; change --config.mesh so its fixed sizes divide {num_devices}')
    sizes[sizes.index(-1)] = num_devices // known
  if math.prod(sizes) != num_devices:
    raise errors.UserError(
        f'mesh {dict(zip(names, sizes))} has {math.prod(sizes)} devices but there are '
        f'{num_devices}; make the sizes multiply to {num_devices} or use -1 for one axis')
  return tuple(names), tuple(sizes)


def make_mesh(axes=DEFAULT_AXES, devices=None):
  """A mesh over `devices` (default: all) with the given (name, size) axes."""
  devices = jax.devices() if devices is None else list(devices)
  names, sizes = mesh_shape(axes, len(devices))
  try:  # Topology-aware placement on TPU/GPU; CPU devices have no topology.
    grid = mesh_utils.create_device_mesh(sizes, devices)
  except (AssertionError, NotImplementedError, ValueError):
    grid = np.asarray(devices).reshape(sizes)
  return Mesh(grid, names)


def batch_axes(mesh):
  """The mesh axes the batch is split over (all but `model`)."""
  return tuple(name for name in mesh.axis_names if name != MODEL_AXIS)


def batch_shards(mesh):
  return math.prod(mesh.shape[name] for name in batch_axes(mesh))


def check_global_batch(global_batch, mesh, what='batch_size'):
  """Refuses a global batch that does not split evenly; returns the per-process batch."""
  shards, hosts = batch_shards(mesh), jax.process_count()
  for count, name in ((shards, 'devices'), (hosts, 'processes')):
    if global_batch % count:
      lower = global_batch - global_batch % count
      raise errors.UserError(
          f'{what}={global_batch} is not divisible by the {count} {name}; '
          f'use a multiple of {count}, e.g. --config.{what}={lower or count}')
  return global_batch // hosts


def batch_sharding(mesh):
  return NamedSharding(mesh, P(batch_axes(mesh)))


def replicated(mesh):
  return NamedSharding(mesh, P())

"""The device mesh and the global-batch arithmetic derived from it."""

import jax
import numpy as np
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxret import errors

DATA_AXIS = 'data'


def make_mesh(devices=None):
  """A 1-D mesh over all devices on the `data` axis.

  Data parallelism and FSDP both use this axis: the batch is split over it, and
  parameters that the sharding rules name are split over it too (ZeRO-3 style).
  """
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def check_global_batch(global_batch, mesh, what='batch_size'):
  """Refuses a global batch that does not split evenly over devices and hosts."""
  devices, hosts = mesh.devices.size, jax.process_count()
  for count, name in ((devices, 'devices'), (hosts, 'processes')):
    if global_batch % count:
      lower = global_batch - global_batch % count
      raise errors.UserError(
          f'{what}={global_batch} is not divisible by the {count} {name}; '
          f'use a multiple of {count}, e.g. --config.{what}={lower or count}')
  return global_batch // hosts


def batch_sharding(mesh):
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh):
  return NamedSharding(mesh, P())

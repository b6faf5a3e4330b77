"""Moving arrays between processes' host memory and the global mesh."""

import jax
import numpy as np
from jax.experimental import multihost_utils

from jaxret.parallel import mesh as mesh_lib


def to_global(local_batch, mesh):
  """Assembles each process's rows of the batch into global arrays split on `data`."""
  sharding = mesh_lib.batch_sharding(mesh)
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_batch)


def to_host(tree):
  """Global arrays -> numpy on every process (gathering across processes if needed)."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  return multihost_utils.process_allgather(tree, tiled=True)

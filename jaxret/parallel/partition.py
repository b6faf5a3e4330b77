"""Parameter sharding as data: rules from parameter-name patterns to partition specs."""

import re

import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxret import tree


def _spec(entry):
  return P(*[None if axis in (None, '', '.') else axis for axis in entry])


def tree_shardings(abstract_tree, mesh, rules=()):
  """A NamedSharding per leaf: the first rule whose regex matches the leaf's
  '/'-joined path gives its PartitionSpec; unmatched leaves are replicated.

  Rules are (regex, spec) pairs, spec a sequence with one entry per array axis
  (a mesh axis name or None), e.g. ('.*mlp/fc1/kernel', ('data', None)) splits
  the MLP's input dimension over the `data` axis (FSDP). An axis is split only
  when its size divides evenly; otherwise the leaf stays replicated there.
  """
  compiled = [(re.compile(pattern), _spec(spec)) for pattern, spec in rules]

  def sharding_of(path, leaf):
    name = tree.path_name(path)
    for pattern, spec in compiled:
      if pattern.search(name):
        return NamedSharding(mesh, _fit(spec, leaf.shape, mesh))
    return NamedSharding(mesh, P())

  return jax.tree_util.tree_map_with_path(sharding_of, abstract_tree)


def _fit(spec, shape, mesh):
  entries = list(spec) + [None] * (len(shape) - len(spec))
  fitted = []
  for size, axis in zip(shape, entries[:len(shape)]):
    fitted.append(axis if axis is not None and size % mesh.shape[axis] == 0 else None)
  return P(*fitted)


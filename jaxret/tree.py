"""Names of the leaves of a pytree: one spelling of a parameter's path everywhere.

Partition rules, frozen-parameter patterns, the non-finite gradient report and
pretrained-weight loading all match or print the same `'a/b/c'` names.
"""

import jax


def _key_name(key):
  """A dict key, a dataclass field or a sequence index, as text."""
  if isinstance(key, (jax.tree_util.DictKey, jax.tree_util.FlattenedIndexKey)):
    return str(key.key)
  if isinstance(key, jax.tree_util.GetAttrKey):
    return key.name
  if isinstance(key, jax.tree_util.SequenceKey):
    return str(key.idx)
  return str(key)


def path_name(path):
  """A JAX key path (from `tree_flatten_with_path`) -> `'a/b/c'`."""
  return '/'.join(_key_name(key) for key in path)


def leaf_names(tree):
  """`path_name` of every leaf of `tree`, in `jax.tree.leaves` order."""
  return [path_name(path) for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]

"""ScaNN searchers: parameters from the gallery's size, build, save and load."""

import math
import os

import numpy as np
from scann import scann_ops_pybind

METHODS = ('auto', 'brute_force', 'tree_ah')


def build_params(num_items, dim, index_config):
  """The build parameters: the config's where set (non-zero), else chosen from the size.

  `auto` uses exact brute force below `brute_force_below` items, and otherwise
  a k-means tree (about sqrt(N) leaves, a tenth of them and at least 16 searched) with
  anisotropic hashing and exact re-ordering, following ScaNN's guidance.
  """
  method = index_config.method
  if method not in METHODS:
    raise ValueError(f'unknown index.method {method!r}; known: {METHODS}')
  if method == 'auto':
    method = 'brute_force' if num_items < index_config.brute_force_below else 'tree_ah'
  params = {'method': method, 'num_items': int(num_items), 'dim': int(dim)}
  if method == 'tree_ah':
    # About sqrt(N) leaves, each with at least ~100 items (ScaNN merges smaller ones).
    num_leaves = index_config.num_leaves or max(
        1, min(int(round(math.sqrt(num_items))), num_items // 100, 4096))
    num_leaves = min(num_leaves, num_items)
    params.update(
        num_leaves=num_leaves,
        # A tenth of the leaves, but at least 16: small trees need a larger share.
        num_leaves_to_search=min(index_config.num_leaves_to_search
                                 or max(16, math.ceil(num_leaves / 10)), num_leaves),
        training_sample_size=min(num_items, 250_000),
        dims_per_block=index_config.dims_per_block,
        anisotropic_threshold=float(index_config.anisotropic_threshold),
        reorder=index_config.reorder or 200)
  return params


def build(database, params, num_neighbors=10):
  database = np.ascontiguousarray(database, np.float32)
  builder = scann_ops_pybind.builder(database, num_neighbors, 'dot_product')
  if params['method'] == 'brute_force':
    return builder.score_brute_force().build()
  return (builder.tree(num_leaves=params['num_leaves'],
                       num_leaves_to_search=params['num_leaves_to_search'],
                       training_sample_size=params['training_sample_size'])
          .score_ah(params['dims_per_block'],
                    anisotropic_quantization_threshold=params['anisotropic_threshold'])
          .reorder(params['reorder'])
          .build())


def save(searcher, directory):
  """Serialises with asset paths relative to `directory`, so the folder can move."""
  os.makedirs(directory, exist_ok=True)
  searcher.serialize(directory, relative_path=True)


def load(directory):
  return scann_ops_pybind.load_searcher(directory)


def search(searcher, queries, k, reorder=0, num_leaves=0):
  """(Q, D) queries -> row indices (Q, k) (uint32) and scores (Q, k), best first.

  `reorder` is the build's exact re-order count (0 for brute force); at least
  `k` candidates are re-ordered, so a large `k` still gets exact scores. A tree
  searcher whose searched leaves hold fewer than `k` items pads its answer with
  NaN scores; those queries are searched again over all `num_leaves` leaves.
  """
  queries = np.ascontiguousarray(queries, np.float32)
  if queries.ndim != 2:
    raise ValueError(f'queries must be (Q, D), not {queries.shape}')
  pre_reorder = max(reorder, k) if reorder else None
  rows, scores = searcher.search_batched(queries, final_num_neighbors=k,
                                         pre_reorder_num_neighbors=pre_reorder)
  if not num_leaves or not np.isnan(scores[:, -1]).any():  # Padding sits at the end.
    return rows, scores
  short = np.isnan(scores[:, -1])
  rows, scores = rows.copy(), scores.copy()
  rows[short], scores[short] = searcher.search_batched(
      queries[short], final_num_neighbors=k, pre_reorder_num_neighbors=pre_reorder,
      leaves_to_search=num_leaves)
  return rows, scores


def upsert(searcher, rows, vectors):
  """Replaces the vectors at `rows` (ints) and appends those whose row is None."""
  searcher.searcher.upsert(list(rows), np.ascontiguousarray(vectors, np.float32), 1)


def delete(searcher, row):
  """Deletes one row; ScaNN moves the last row into its place."""
  searcher.searcher.delete([int(row)])

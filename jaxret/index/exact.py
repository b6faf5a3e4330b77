"""Exact (brute-force) maximum inner product search: the ground truth for ANN."""

import numpy as np


def top_k(queries, database, k):
  """Row indices and scores of the k largest inner products, best first."""
  scores = np.asarray(queries, np.float32) @ np.asarray(database, np.float32).T
  k = min(k, scores.shape[1])
  part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
  part_scores = np.take_along_axis(scores, part, axis=1)
  order = np.argsort(-part_scores, axis=1, kind='stable')
  return np.take_along_axis(part, order, axis=1), np.take_along_axis(part_scores, order, axis=1)

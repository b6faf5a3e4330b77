"""The re-ranking hook: a slow scorer applied to the fast index's top candidates.

A re-ranker is any object with

  num_candidates: int       how many fast candidates it wants to see (>= k is used)
  name: str                 shown by /healthz
  bucket_costs_ms: dict     compiled candidate bucket K -> measured ms per query, from
                            which a latency budget picks the largest K that fits
  __call__(query, candidate_ids, fast_scores) -> slow_scores

where `query` is the query text, `candidate_ids` the fast search's ids (best
first), `fast_scores` their (num_candidates,) float32 scores, and the result a
(num_candidates,) array of scores (higher is better), or a pair (final scores,
slow scores) for a re-ranker that mixes the fast score into its final score,
as Miech et al. do with weight beta (`jaxret/rerank/reranker.py`). The service
orders the candidates by the (final) scores, keeps the top k, and reports
`slow_scores` (and `final_scores` when they differ) next to the `fast_scores`.
"""

from typing import Protocol, Sequence

import numpy as np

from jaxret.rerank import reranker


class Reranker(Protocol):
  name: str
  num_candidates: int
  bucket_costs_ms: dict

  def __call__(self, query: str, candidate_ids: Sequence, fast_scores: np.ndarray) -> np.ndarray:
    ...


def for_workdir(config, workdir):
  """The workdir's re-ranker, or None when its config names no slow model
  (`rerank.slow_workdir`, as in configs/distill.py)."""
  found = reranker.for_workdir(config, workdir)
  if found is not None:
    found.measure_costs()
  return found

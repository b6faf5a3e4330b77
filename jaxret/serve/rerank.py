"""The re-ranking hook: a slow scorer applied to the fast index's top candidates.

A re-ranker is any object with

  num_candidates: int       how many fast candidates it wants to see (>= k is used)
  name: str                 shown by /healthz
  __call__(query, candidate_ids, fast_scores) -> slow_scores

where `query` is the query text, `candidate_ids` the fast search's ids (best
first), `fast_scores` their (num_candidates,) float32 scores, and the result a
(num_candidates,) array of final scores (higher is better; a re-ranker that
mixes in the fast score, as Miech et al. do with weight beta, does so itself).
The service orders the candidates by the returned scores, keeps the top k, and
reports them as `slow_scores` next to the `fast_scores`.
"""

from typing import Protocol, Sequence

import numpy as np


class Reranker(Protocol):
  name: str
  num_candidates: int

  def __call__(self, query: str, candidate_ids: Sequence, fast_scores: np.ndarray) -> np.ndarray:
    ...


def for_workdir(config, workdir):
  """The workdir's re-ranker, or None when it has none.

  No model in jaxret has a slow re-ranker yet; when one lands, it is restored
  here from `config` and `workdir` and returned.
  """
  del config, workdir
  return None

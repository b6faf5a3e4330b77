"""Text→image Recall@K of the slow model by exhaustive pair scoring (every query
against every image of the split): the upper bound that re-ranking approaches."""

import time

import numpy as np

from jaxret.evaluate import base
from jaxret.evaluate import recall
from jaxret.models import capabilities
from jaxret.rerank import scorer as scorer_lib


def query_captions(records, max_queries):
  """One caption per image (its first), for `max_queries` images spread over the
  split (0: all): (texts, image ids)."""
  rows = np.arange(len(records))
  if 0 < max_queries < len(rows):
    rows = np.linspace(0, len(rows) - 1, max_queries).round().astype(int)
  return [records.captions[i][0] for i in rows], np.asarray(records.image_ids)[rows]


class SlowRetrievalEvaluator(base.Evaluator):
  """h(x, y) for every (query, image) pair; metrics as for dual encoders, plus timing."""
  requires = (capabilities.PairScorer,)

  def __init__(self, model, mesh, records, tokenizer, config, split=None, output_dir=None):
    del mesh, split, output_dir
    self.model = model
    self.records = records
    self.tokenizer = tokenizer
    self.config = config

  def __call__(self, params):
    rerank = self.config.rerank
    scorer = scorer_lib.SlowScorer(
        self.model, params, self.config.data, candidate_buckets=rerank.candidate_buckets,
        length_buckets=rerank.length_buckets)
    visual = scorer.visual_tokens(self.records.images)
    texts, text_ids = query_captions(self.records, self.config.eval.max_queries)
    tokens, mask = self.tokenizer.encode(texts)
    start = time.perf_counter()
    scores = np.stack([scorer.score(tokens[i:i + 1], mask[i:i + 1], visual[None])[0]
                       for i in range(len(texts))])
    seconds = time.perf_counter() - start
    results = recall.metrics_from_scores(scores, self.records.image_ids, text_ids,
                                         directions=('t2i',))
    results.update(num_texts=len(texts), seconds_per_query=seconds / max(len(texts), 1))
    return results

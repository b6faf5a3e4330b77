"""Text→image Recall@K of the slow model by exhaustive pair scoring (every query
against every image of the split): the upper bound that re-ranking approaches."""

import time

import numpy as np

from jaxret import errors

from jaxret.evaluate import base
from jaxret.evaluate import recall
from jaxret.models import capabilities
from jaxret.rerank import scorer as scorer_lib


# Which captions of the chosen images are queries (`eval.query_captions`).
QUERY_CAPTIONS = ('first', 'all')


def query_captions(records, max_queries, which='first'):
  """The captions of `max_queries` images spread over the split (0: all images), their
  first (`which='first'`) or all of them: (texts, image ids)."""
  if which not in QUERY_CAPTIONS:
    raise errors.UserError(f'unknown eval.query_captions {which!r}; known: '
                           f'{", ".join(QUERY_CAPTIONS)}')
  rows = np.arange(len(records))
  if 0 < max_queries < len(rows):
    rows = np.linspace(0, len(rows) - 1, max_queries).round().astype(int)
  ids = np.asarray(records.image_ids)
  if which == 'first':
    return [records.captions[i][0] for i in rows], ids[rows]
  return ([text for i in rows for text in records.captions[i]],
          np.asarray([ids[i] for i in rows for _ in records.captions[i]]))


class SlowRetrievalEvaluator(base.Evaluator):
  """h(x, y) for every (query, image) pair (`SlowScorer.score_gallery`: queries in batches);
  metrics as for dual encoders, plus the time per query and per pair."""
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
        length_buckets=rerank.length_buckets, storage_dtype=rerank.storage_dtype,
        features=rerank.features)
    features = scorer.gallery_features(self.records.images)
    texts, text_ids = query_captions(self.records, self.config.eval.max_queries,
                                     self.config.eval.query_captions)
    tokens, mask = self.tokenizer.encode(texts)
    start = time.perf_counter()
    scores = scorer.score_gallery(tokens, mask, features)
    seconds = time.perf_counter() - start
    results = recall.metrics_from_scores(scores, self.records.image_ids, text_ids,
                                         directions=('t2i',))
    results.update(num_texts=len(texts), seconds_per_query=seconds / max(len(texts), 1),
                   pair_us=1e6 * seconds / max(len(texts) * len(self.records), 1))
    return results

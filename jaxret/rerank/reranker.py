"""Fast top-K, then the slow model: final score = h + β · fast score (Miech et al. 2021)."""

import os
import time

import numpy as np

from jaxret import errors
from jaxret.config import workdir as workdir_config
from jaxret.rerank import buckets
from jaxret.rerank import scorer as scorer_lib
from jaxret.rerank import visual_store
from jaxret.inference import restore as restore_lib


def combine(slow_scores, fast_scores, beta):
  """The final re-ranking score: h + β · fast. β = 0 ranks by h alone; a huge β keeps
  the fast order (h only breaks ties)."""
  return np.asarray(slow_scores, np.float32) + beta * np.asarray(fast_scores, np.float32)


class FastSlowReranker:
  """Re-ranks fast candidates with the slow model over stored visual tokens.

  Also the serving hook (`jaxret/serve/rerank.py`): called with one query, its
  candidate ids and fast scores, it returns (final scores, slow scores).
  """
  name = 'fast+slow'

  def __init__(self, scorer, tokenizer, ids, visual, *, num_candidates, beta):
    self.scorer = scorer
    self.tokenizer = tokenizer
    self.row_of = {image_id: row for row, image_id in enumerate(np.asarray(ids).tolist())}
    self.visual = visual
    self.num_candidates = num_candidates
    self.beta = beta
    self.bucket_costs_ms = {}  # Candidate bucket -> measured ms per query (`measure_costs`).

  def measure_costs(self, probe_text='a red circle', repeats=3):
    """Compiles each (candidate bucket, caption-length bucket) program, so that no request
    compiles, and times one query of the longest length on each candidate bucket (the
    median of `repeats`): a latency budget then picks the largest bucket that fits for
    every caption."""
    probes = buckets.length_probes(*self.tokenizer.encode([probe_text]),
                                   self.scorer.length_buckets)
    ids = list(self.row_of)
    for k in self.scorer.candidate_buckets:
      candidates = [ids[:k]]
      fast = np.zeros((1, len(candidates[0])), np.float32)
      for probe in probes:
        self.rerank(*probe, candidates, fast)  # Compiles.
      times = []
      for _ in range(repeats):
        start = time.perf_counter()
        self.rerank(*probes[-1], candidates, fast)
        times.append(1000 * (time.perf_counter() - start))
      self.bucket_costs_ms[k] = float(np.median(times))
    return self.bucket_costs_ms

  def slow_scores(self, tokens, mask, candidate_ids):
    """h for (Q, L) captions against their (Q, K) candidate ids."""
    rows = np.vectorize(self.row_of.__getitem__, otypes=[np.int64])(np.asarray(candidate_ids))
    return self.scorer.score(tokens, mask, self.visual[rows])

  def rerank(self, tokens, mask, candidate_ids, fast_scores):
    """(final, slow) scores, each (Q, K); order each row by final, descending."""
    slow = self.slow_scores(tokens, mask, candidate_ids)
    return combine(slow, fast_scores, self.beta), slow

  def __call__(self, query, candidate_ids, fast_scores):
    tokens, mask = self.tokenizer.encode([query])
    final, slow = self.rerank(tokens, mask, [list(candidate_ids)], np.asarray(fast_scores)[None])
    return final[0], slow[0]


def restore_scorer(slow_workdir, rerank_config, data_config):
  """The latest checkpoint of the slow workdir: (`SlowScorer`, its tokenizer, its step).

  Refuses a folder that is not a trained workdir and a slow model that reads images
  of another size than `data_config`'s (the fast model's); captions it reads with its
  own tokenizer.
  """
  if not os.path.exists(os.path.join(slow_workdir, workdir_config.FILENAME)):
    raise errors.UserError(f'rerank.slow_workdir {slow_workdir} is not a trained slow-model '
                           'workdir (no config.json); train it with configs/caption.py first')
  slow_config = workdir_config.load(slow_workdir)
  if slow_config.data.image_size != data_config.image_size:
    raise errors.UserError(
        f'the slow workdir {slow_workdir} reads {slow_config.data.image_size}px images but the '
        f'fast model {data_config.image_size}px; use a slow model trained on the same '
        'data.image_size')
  restored = restore_lib.restore(slow_config, slow_workdir)
  scorer = scorer_lib.SlowScorer(
      restored.model, restored.params, slow_config.data,
      candidate_buckets=rerank_config.candidate_buckets,
      length_buckets=rerank_config.length_buckets, storage_dtype=rerank_config.storage_dtype,
      features=rerank_config.features)
  return scorer, restored.tokenizer, restored.step


def for_workdir(config, workdir):
  """The workdir's re-ranker if its config names a slow model (`rerank.slow_workdir`; '':
  none), which needs the slow model's tokens of the index (`--mode=index`)."""
  rerank = config.rerank
  if not rerank.slow_workdir:
    return None
  ids, visual, manifest = visual_store.load(visual_store.directory(workdir))
  scorer, tokenizer, step = restore_scorer(rerank.slow_workdir, rerank, config.data)
  if step != manifest['slow_step']:
    raise errors.UserError(
        f'the stored slow visual tokens come from step {manifest["slow_step"]} but '
        f'{rerank.slow_workdir} is at step {step}; rebuild them with --mode=index')
  stored = manifest.get('features', 'unnamed (an older index)')  # Older stores lack the key.
  if stored != scorer.features:
    raise errors.UserError(f'the stored slow features are {stored} but rerank.features is '
                           f'{scorer.features!r}; rebuild them with --mode=index')
  return FastSlowReranker(scorer, tokenizer, ids, visual, num_candidates=rerank.k,
                          beta=rerank.beta)

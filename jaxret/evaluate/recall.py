"""Retrieval metrics computed per image id, with several captions per image."""

import numpy as np


def ranks_of_targets(scores, correct):
  """For each row, the 0-based rank of its best-scoring correct column.

  scores: (Q, G) similarities; correct: (Q, G) bool. Rank = number of columns
  that score strictly higher than the best correct one.
  """
  if not correct.any(axis=1).all():
    missing = int(np.sum(~correct.any(axis=1)))
    raise ValueError(f'{missing} queries have no correct item in the gallery')
  best_correct = np.where(correct, scores, -np.inf).max(axis=1)
  return np.sum(scores > best_correct[:, None], axis=1)


def retrieval_metrics(image_emb, image_ids, text_emb, text_image_ids, ks=(1, 5, 10)):
  """Text→image and image→text Recall@K, median and mean rank.

  Text→image: a caption is right at K when its image is in its top K images.
  Image→text: an image is right at K when any of its captions is in its top K
  captions. Matching is by image id, never by position.
  """
  scores = np.asarray(text_emb, np.float32) @ np.asarray(image_emb, np.float32).T
  return metrics_from_scores(scores, image_ids, text_image_ids, ks=ks)


def metrics_from_scores(t2i_scores, image_ids, text_image_ids, i2t_scores=None, ks=(1, 5, 10),
                        directions=('t2i', 'i2t')):
  """`retrieval_metrics` from score matrices (any scorer, higher is better):
  t2i_scores (M, N) of each caption against each image, and i2t_scores (N, M)
  (default: the transpose; models whose two directions score differently, such
  as late interaction, pass both). `directions=('t2i',)` when not every image
  has a caption among the texts."""
  image_ids = np.asarray(image_ids)
  text_image_ids = np.asarray(text_image_ids)
  t2i_scores = np.asarray(t2i_scores, np.float32)
  i2t_scores = t2i_scores.T if i2t_scores is None else np.asarray(i2t_scores, np.float32)
  correct = text_image_ids[:, None] == image_ids[None, :]
  results = {}
  for name in directions:
    ranks = (ranks_of_targets(t2i_scores, correct) if name == 't2i'
             else ranks_of_targets(i2t_scores, correct.T))
    _add_rank_metrics(results, name, ranks, ks)
  results['rsum'] = sum(100 * results[f'{n}/R@{k}'] for n in directions for k in ks)
  return results


def label_retrieval_metrics(emb, labels, ks=(1, 5, 10)):
  """Image-to-image Recall@K by label (the metric-learning protocol IRT reports).

  Every item queries all the others (never itself); a query is right at K when
  an item with its label is among its top K. Queries whose label no other item
  has are refused. Keys `i2i/R@K`, `i2i/median_rank`, `i2i/mean_rank`.
  """
  emb = np.asarray(emb, np.float32)
  labels = np.asarray(labels)
  scores = emb @ emb.T
  itself = np.eye(len(labels), dtype=bool)
  scores[itself] = -np.inf
  correct = (labels[:, None] == labels[None, :]) & ~itself
  results = {}
  _add_rank_metrics(results, 'i2i', ranks_of_targets(scores, correct), ks)
  return results


def _add_rank_metrics(results, name, ranks, ks):
  for k in ks:
    results[f'{name}/R@{k}'] = float(np.mean(ranks < k))
  results[f'{name}/median_rank'] = float(np.median(ranks + 1))
  results[f'{name}/mean_rank'] = float(np.mean(ranks + 1))

"""Retrieval metrics computed per image id, with several captions per image."""

from typing import NamedTuple

import numpy as np


class Ranks(NamedTuple):
  """Where each query's right items rank, ties included: `above`, the wrong items scoring
  above its best right one; `tied`, the wrong items scoring the same; `tied_right`, the
  right items scoring the same (at least 1). Ties are broken at random, in expectation
  (McSherry and Najork, ECIR 2008): a model that cannot tell two items apart (mean pooling
  over a clip and its reversal, a constant model) gets chance credit for them, never full
  credit."""
  above: np.ndarray
  tied: np.ndarray
  tied_right: np.ndarray

  def recall(self, k):
    """Per query, the probability that a right item is among the top k."""
    slots = np.clip(k - self.above, 0, None)  # Places of the top k left to the tied items.
    all_wrong = np.ones(len(self.above))  # P(the first `slots` tied items are all wrong).
    for i in range(k):
      fraction = (self.tied - i) / np.maximum(self.tied + self.tied_right - i, 1)
      all_wrong *= np.where(i < slots, np.clip(fraction, 0, None), 1.0)
    return 1.0 - all_wrong

  def expected(self):
    """Per query, the expected 0-based rank of its first right item."""
    return self.above + self.tied / (self.tied_right + 1)


def ranks_of_targets(scores, correct):
  """`Ranks` of each row's correct columns: scores (Q, G) similarities; correct (Q, G) bool."""
  if not correct.any(axis=1).all():
    missing = int(np.sum(~correct.any(axis=1)))
    raise ValueError(f'{missing} queries have no correct item in the gallery')
  best = np.where(correct, scores, -np.inf).max(axis=1)[:, None]
  return Ranks(above=np.sum(~correct & (scores > best), axis=1),
               tied=np.sum(~correct & (scores == best), axis=1),
               tied_right=np.sum(correct & (scores == best), axis=1))


def ranks_of_rows(scores, right):
  """`ranks_of_targets` with one correct column per row: scores (Q, G), right (Q,) ints."""
  scores = np.asarray(scores)
  correct = np.zeros(scores.shape, bool)
  correct[np.arange(len(scores)), np.asarray(right)] = True
  return ranks_of_targets(scores, correct)


def rows_of(image_ids, wanted_ids):
  """The row in `image_ids` of each id of `wanted_ids` (a caption's image): the `right`
  of `ranks_of_rows`. An id missing from `image_ids` is refused."""
  row_of = {image_id: row for row, image_id in enumerate(np.asarray(image_ids).tolist())}
  wanted = np.asarray(wanted_ids).tolist()
  missing = [i for i in wanted if i not in row_of]
  if missing:
    raise ValueError(f'{len(missing)} ids are not in the gallery, the first {missing[0]!r}')
  return np.asarray([row_of[i] for i in wanted], np.int64)


def positions(ranks):
  """`Ranks` of 0-based positions in orders without ties (a re-ranked list)."""
  ranks = np.asarray(ranks)
  return Ranks(above=ranks, tied=np.zeros_like(ranks), tied_right=np.ones_like(ranks))


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
    results.update(rank_metrics(name, ranks, ks))
  results['rsum'] = sum(100 * results[f'{n}/R@{k}'] for n in directions for k in ks)
  return results


def group_metrics(scores, right, groups):
  """Text→image R@1 over a gallery of near-duplicate groups, split in two: `group/R@1`,
  the caption's top image is one of its group's (telling the content apart), and
  `within_group/R@1`, its own image scores highest among its group's (telling the
  near-duplicates apart: for a group of n, chance is 1/n). scores (M, N) of the
  captions against the images, right (M,) their images' rows, groups (N,) the images'
  group ids. Ties as in `Ranks`."""
  groups = np.asarray(groups)
  same_group = groups[None, :] == groups[np.asarray(right)][:, None]
  group_ranks = ranks_of_targets(scores, same_group)
  within_ranks = ranks_of_rows(np.where(same_group, scores, -np.inf), right)
  return {'group/R@1': float(np.mean(group_ranks.recall(1))),
          'within_group/R@1': float(np.mean(within_ranks.recall(1)))}


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
  return rank_metrics('i2i', ranks_of_targets(scores, correct), ks)


def rank_metrics(name, ranks, ks=(1, 5, 10)):
  """`{name}/R@K` for each K, `{name}/median_rank` and `{name}/mean_rank` (1-based, of
  the first right item) from `Ranks`."""
  results = {f'{name}/R@{k}': float(np.mean(ranks.recall(k))) for k in ks}
  expected = ranks.expected() + 1
  results[f'{name}/median_rank'] = float(np.median(expected))
  results[f'{name}/mean_rank'] = float(np.mean(expected))
  return results

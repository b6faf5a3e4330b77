"""Recall@K by image id with several captions per image, on hand-made cases."""

import itertools

import numpy as np
import pytest

from jaxret.evaluate import recall


def _unit(rows):
  rows = np.asarray(rows, np.float32)
  return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_two_captions_per_image():
  # Images a (id 10), b (id 20), c (id 30) along the axes.
  image_emb = _unit(np.eye(3))
  image_ids = np.array([10, 20, 30])
  text_emb = _unit([
      [1, 0.1, 0],    # of 10: rank 0
      [0, 1, 0.5],    # of 10: image 20 first, 30 second, 10 last -> rank 2
      [0.1, 1, 0],    # of 20: rank 0
      [0.9, 0.5, 0],  # of 20: 10 first -> rank 1
      [0, 0, 1],      # of 30: rank 0
      [0, 0, 1],      # of 30: rank 0
  ])
  text_ids = np.array([10, 10, 20, 20, 30, 30])
  metrics = recall.retrieval_metrics(image_emb, image_ids, text_emb, text_ids, ks=(1, 2))
  assert metrics['t2i/R@1'] == pytest.approx(4 / 6)
  assert metrics['t2i/R@2'] == pytest.approx(5 / 6)
  assert metrics['t2i/median_rank'] == 1
  # Image→text: each image's best caption is its own (10: caption 0, 20:
  # caption 2, 30: captions 4 and 5), although caption 1 of 10 is wrong.
  assert metrics['i2t/R@1'] == 1.0
  assert metrics['i2t/median_rank'] == 1

def test_matching_is_by_id_not_position():
  """Shuffling the gallery (and its ids together) changes nothing."""
  rng = np.random.default_rng(0)
  image_emb = _unit(rng.normal(size=(20, 8)))
  image_ids = np.arange(100, 120)
  text_ids = np.repeat(image_ids, 3)
  text_emb = _unit(image_emb[np.repeat(np.arange(20), 3)] + 0.3 * rng.normal(size=(60, 8)))
  base = recall.retrieval_metrics(image_emb, image_ids, text_emb, text_ids)
  order = rng.permutation(20)
  shuffled = recall.retrieval_metrics(image_emb[order], image_ids[order], text_emb, text_ids)
  assert base == pytest.approx(shuffled)


def test_i2t_counts_any_caption():
  image_emb = _unit([[1, 0], [0, 1]])
  # Image 1's first caption looks like image 2; its second one is right.
  text_emb = _unit([[0.3, 1], [1, 0.1], [0, 1]])
  metrics = recall.retrieval_metrics(image_emb, [1, 2], text_emb, [1, 1, 2], ks=(1,))
  assert metrics['i2t/R@1'] == 1.0
  assert metrics['t2i/R@1'] == pytest.approx(2 / 3)


def test_query_without_a_gallery_match_is_refused():
  with pytest.raises(ValueError, match='no correct item'):
    recall.retrieval_metrics(_unit([[1, 0]]), [1], _unit([[1, 0]]), [2])



def test_a_constant_model_gets_chance_not_full_credit():
  """Every image ties with every other: ties are broken at random, in expectation."""
  metrics = recall.metrics_from_scores(np.zeros((6, 3)), [1, 2, 3], [1, 1, 2, 2, 3, 3],
                                       ks=(1, 3, 5))
  assert metrics['t2i/R@1'] == pytest.approx(1 / 3)  # One right image among 3.
  assert metrics['t2i/R@3'] == pytest.approx(1.0)
  assert metrics['t2i/median_rank'] == pytest.approx(2)
  assert metrics['i2t/R@1'] == pytest.approx(1 / 3)  # Two right captions among 6.
  assert metrics['i2t/R@5'] == pytest.approx(1.0)
  assert metrics['i2t/median_rank'] == pytest.approx(1 + 4 / 3)


def test_tied_ranks_against_every_order_of_the_ties():
  """Recall@K and the expected rank of the first right item, averaged over every order of
  each row's tied items, by enumeration."""
  rng = np.random.default_rng(0)
  scores = rng.integers(0, 4, size=(40, 7)).astype(np.float32)  # Many ties.
  correct = rng.random((40, 7)) < 0.25
  correct[np.arange(40), rng.integers(0, 7, 40)] = True
  ranks = recall.ranks_of_targets(scores, correct)
  for row, right, i in zip(scores, correct, range(40)):
    best = row[right].max()
    above = int(np.sum(row[~right] > best))
    tied = [bool(c) for s, c in zip(row, right) if s == best]
    firsts = [above + list(order).index(True) for order in itertools.permutations(tied)]
    for k in (1, 2, 3, 5):
      assert ranks.recall(k)[i] == pytest.approx(np.mean([f < k for f in firsts]))
    assert ranks.expected()[i] == pytest.approx(np.mean(firsts))


def test_ranks_of_rows_is_ranks_of_one_hot_targets():
  rng = np.random.default_rng(1)
  scores = rng.integers(0, 3, size=(20, 6)).astype(np.float32)
  right = rng.integers(0, 6, 20)
  one_hot = np.arange(6)[None, :] == right[:, None]
  for got, want in zip(recall.ranks_of_rows(scores, right),
                       recall.ranks_of_targets(scores, one_hot)):
    np.testing.assert_array_equal(got, want)


def test_rows_of_finds_each_id_and_refuses_a_missing_one():
  np.testing.assert_array_equal(recall.rows_of([40, 7, 12], [12, 40, 12, 7]), [2, 0, 2, 1])
  with pytest.raises(ValueError, match='1 ids are not in the gallery, the first 5'):
    recall.rows_of([40, 7, 12], [7, 5])


def test_rank_metrics_from_ranks():
  ranks = recall.Ranks(above=np.array([0, 3, 1]), tied=np.array([0, 0, 2]),
                       tied_right=np.array([1, 1, 1]))  # Expected 0-based ranks 0, 3, 2.
  metrics = recall.rank_metrics('t2i', ranks, ks=(1, 3))
  assert metrics == pytest.approx({'t2i/R@1': 1 / 3, 't2i/R@3': (1 + 0 + 2 / 3) / 3,
                                   't2i/median_rank': 3.0, 't2i/mean_rank': 8 / 3})


def test_group_metrics_split_r1_into_the_group_and_within_it():
  # Two groups of two images; captions 0-3 of images 0-3 in order.
  scores = np.array([[0.9, 0.9, 0.1, 0.0],   # ties with its near-duplicate: half credit
                     [0.2, 0.8, 0.9, 0.0],   # image 2 (other group) first; right within
                     [0.0, 0.1, 0.5, 0.7],   # right group, wrong image
                     [0.0, 0.0, 0.2, 0.6]])  # right
  metrics = recall.group_metrics(scores, [0, 1, 2, 3], [7, 7, 9, 9])
  assert metrics['group/R@1'] == pytest.approx((1 + 0 + 1 + 1) / 4)
  assert metrics['within_group/R@1'] == pytest.approx((0.5 + 1 + 0 + 1) / 4)

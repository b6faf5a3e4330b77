"""Recall@K by image id with several captions per image, on hand-made cases."""

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

"""IRT's image-to-image mode: scene labels, the multi-view gallery, Recall@K by
label; and PCA of exported descriptors."""

import json

import jax
import numpy as np
import pytest

from configs import irt_image
from jaxret.config import workdir as workdir_config
from jaxret.data import pipeline
from jaxret.data.builtin import dataset
from jaxret.evaluate import image_retrieval
from jaxret.evaluate import recall
from jaxret.export import pca
from jaxret.inference import restore as restore_lib
from jaxret.objectives import labels
from conftest import run_main


def _unit(rows):
  rows = np.asarray(rows, np.float32)
  return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_label_recall_excludes_the_query_itself():
  metrics = recall.label_retrieval_metrics(_unit([[1, 0], [0.6, 0.8]]), [0, 0], ks=(1,))
  assert metrics['i2i/R@1'] == 1.0  # Each finds the other, never itself.
  # Items 0 and 1 (label 0) are far apart; items 2 and 3 (label 1) sit between.
  emb = _unit([[1, 0], [0.6, 0.8], [0.95, 0.3], [0.9, 0.4]])
  metrics = recall.label_retrieval_metrics(emb, [0, 0, 1, 1], ks=(1, 2, 3))
  # Item 0: 2, 3, then 1 (rank 2). Item 1: 3, 2, then 0 (rank 2). Items 2, 3: each other.
  assert metrics['i2i/R@1'] == pytest.approx(2 / 4)
  assert metrics['i2i/R@2'] == pytest.approx(2 / 4)
  assert metrics['i2i/R@3'] == 1.0
  # A label no other item has leaves its query without an answer: refused.
  with pytest.raises(ValueError, match='no correct item'):
    recall.label_retrieval_metrics(emb[:3], [0, 0, 1])


def test_scene_labels_group_equal_keys():
  config = irt_image.get_config('runlocal')
  scenes = dataset.scenes_of_split(config.data, 'train')
  train_labels = labels.split_labels('builtin_scene', config.data, 'train')
  assert train_labels.shape == (len(scenes),)
  keys = [s.key for s in scenes]
  for i in range(0, len(scenes), 37):
    same = np.flatnonzero(train_labels == train_labels[i])
    assert all(keys[j] == keys[i] for j in same)
  assert len(np.unique(train_labels)) < len(scenes)  # Some descriptions repeat.


def test_multiview_gallery_renders_each_scene_again_differently():
  config = irt_image.get_config('runlocal')
  images, view_labels = image_retrieval.multiview_gallery(config.data, 'val', views=3)
  n = config.data.num_val
  assert images.shape[0] == 3 * n and images.dtype == np.uint8
  np.testing.assert_array_equal(view_labels, np.tile(np.arange(n), 3))
  records = dataset.load_split(config.data, 'val')
  np.testing.assert_array_equal(images[:n], records.images)  # View 0: the split's own.
  assert not np.array_equal(images[n:2 * n], images[:n])  # Other jitter ...
  assert not np.array_equal(images[2 * n:], images[n:2 * n])
  again, _ = image_retrieval.multiview_gallery(config.data, 'val', views=3)
  np.testing.assert_array_equal(images, again)  # ... but deterministic.


def test_a_single_view_is_refused():
  config = irt_image.get_config('runlocal')
  with pytest.raises(Exception, match='at least 2 views'):
    image_retrieval.multiview_gallery(config.data, 'val', views=1)


def test_pca_keeps_the_top_variance_directions_and_unit_norms():
  rng = np.random.default_rng(0)
  # Variance mostly in two directions of a 6-d space.
  basis = np.linalg.qr(rng.normal(size=(6, 6)))[0]
  emb = (rng.normal(size=(500, 6)) * [5, 3, 0.1, 0.1, 0.1, 0.1]) @ basis.T + 2.0
  mean, components = pca.fit(emb, 2)
  assert components.shape == (2, 6)
  np.testing.assert_allclose(components @ components.T, np.eye(2), atol=1e-5)
  np.testing.assert_allclose(np.abs(components @ basis[:, :2]), np.eye(2), atol=0.05)
  np.testing.assert_allclose(mean, emb.mean(0), atol=1e-5)
  reduced = pca.apply(emb, mean, components)
  assert reduced.shape == (500, 2)
  np.testing.assert_allclose(np.linalg.norm(reduced, axis=1), 1, atol=1e-5)
  # Deterministic signs.
  np.testing.assert_array_equal(pca.fit(emb, 2)[1], components)
  with pytest.raises(ValueError):
    pca.fit(emb, 7)


def _numpy_image_recall(workdir):
  """i2i Recall@1/5/10 of the workdir's checkpoint, recomputed apart from jaxret's evaluator:
  the test split's views embedded with the model, each image ranking all the others by
  cosine (never itself), right when another view of its scene comes first."""
  config = workdir_config.load(str(workdir))
  restored = restore_lib.restore(config, str(workdir))
  images, scene_labels = image_retrieval.multiview_gallery(config.data, config.eval.split,
                                                           config.eval.views)
  model = restored.model
  encode = jax.jit(lambda params, x: model.apply({'params': params}, x,
                                                 method=model.encode_image)[0])
  emb = np.concatenate([
      np.asarray(encode(restored.params, pipeline.normalize_images(images[i:i + 32],
                                                                  config.data)))
      for i in range(0, len(images), 32)]).astype(np.float64)
  scores = emb @ emb.T
  ranks = []
  for query, row in enumerate(scores):
    others = np.delete(np.arange(len(scene_labels)), query)
    order = others[np.argsort(-row[others], kind='stable')]
    ranks.append(np.flatnonzero(scene_labels[order] == scene_labels[query])[0])
  ranks = np.asarray(ranks)
  return {f'i2i/R@{k}': float(np.mean(ranks < k)) for k in (1, 5, 10)}


def test_image_mode_end_to_end_with_pca_export(tmp_path):
  """Train two steps on labels, evaluate image→image, export PCA-reduced descriptors."""
  result = run_main('--mode=demo', '--config=configs/irt_image.py:runlocal,steps=2',
                    f'--workdir={tmp_path}', '--config.export.pca_dim=8')
  assert '| image→image |' in result.stdout
  with open(tmp_path / 'eval' / 'results.json') as f:
    results = json.load(f)
  assert results['num_i2i_images'] == 2 * results['num_images']
  expected = _numpy_image_recall(tmp_path)
  for key, value in expected.items():
    # Within one query: the gallery is embedded here in other batches, which may
    # turn a near tie.
    assert results[key] == pytest.approx(value, abs=1.01 / results['num_i2i_images']), key
  # Two steps already put a scene's two views near each other (measured: R@1 0.047,
  # chance 0.008); a gallery whose views did not match would score chance.
  assert results['i2i/R@1'] >= 3 * results['chance_i2i_R1']
  assert 't2i/R@1' in results  # The text metrics are there too (near chance).
  with np.load(tmp_path / 'export' / 'embeddings.npz') as exported:
    reduced = exported['image_emb_pca']
    assert reduced.shape == (len(exported['image_ids']), 8)
    assert exported['text_emb_pca'].shape == (len(exported['text_image_ids']), 8)
    np.testing.assert_allclose(np.linalg.norm(reduced, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(
        pca.apply(exported['image_emb'], exported['pca_mean'], exported['pca_components']),
        reduced, atol=1e-6)

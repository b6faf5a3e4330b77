"""ScaNN index: agreement with exact top-K, moving the folder, and refusing damage."""

import shutil

import ml_collections
import numpy as np
import pytest

from jaxret import errors
from jaxret.index import exact
from jaxret.index import store


def _config(method):
  return ml_collections.ConfigDict(dict(
      method=method, brute_force_below=10_000, num_leaves=0, num_leaves_to_search=0,
      reorder=0, dims_per_block=2, anisotropic_threshold=0.2))


def _gallery(n=2000, d=32, clusters=40, seed=0):
  """Unit vectors around cluster centres, like a trained model's embeddings."""
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(clusters, d))
  points = centres[rng.integers(clusters, size=n)] + 0.35 * rng.normal(size=(n, d))
  points /= np.linalg.norm(points, axis=1, keepdims=True)
  queries = points[rng.choice(n, 50, replace=False)] + 0.2 * rng.normal(size=(50, d))
  return points.astype(np.float32), queries.astype(np.float32)


def test_exact_top_k():
  database = np.eye(4, dtype=np.float32)
  rows, scores = exact.top_k(np.array([[0.1, 0.5, 0.2, 0.9]], np.float32), database, 3)
  assert rows.tolist() == [[3, 1, 2]]
  np.testing.assert_allclose(scores, [[0.9, 0.5, 0.2]])


@pytest.mark.parametrize('method', ['brute_force', 'tree_ah'])
def test_scann_agrees_with_exact(tmp_path, method):
  gallery, queries = _gallery()
  ids = np.array([f'img-{i}' for i in range(len(gallery))])
  manifest = store.build(gallery, ids, step=7, index_config=_config(method),
                         out_dir=str(tmp_path / 'index'))
  assert manifest['build_params']['method'] == method
  index = store.load(str(tmp_path / 'index'), expected_dim=32, expected_step=7)
  found, scores = index.search(queries, 10)
  rows, _ = exact.top_k(queries, gallery, 10)
  recall = np.mean([len(set(f) & set(ids[r])) / 10 for f, r in zip(found, rows)])
  assert recall >= (1.0 if method == 'brute_force' else 0.95)
  # Re-ordering is exact: returned scores are the true inner products, best first.
  row_of = {image_id: row for row, image_id in enumerate(ids)}
  true_scores = np.array([[queries[q] @ gallery[row_of[i]] for i in found[q]]
                          for q in range(len(queries))])
  np.testing.assert_allclose(scores, true_scores, atol=1e-4)
  assert (np.diff(scores, axis=1) <= 1e-6).all()


def test_moved_index_still_loads(tmp_path):
  gallery, queries = _gallery(n=300)
  store.build(gallery, np.arange(300), step=1, index_config=_config('tree_ah'),
              out_dir=str(tmp_path / 'a' / 'index'))
  before = store.load(str(tmp_path / 'a' / 'index')).search(queries, 5)
  shutil.move(str(tmp_path / 'a'), str(tmp_path / 'b'))
  after = store.load(str(tmp_path / 'b' / 'index')).search(queries, 5)
  np.testing.assert_array_equal(before[0], after[0])


def test_damaged_or_mismatched_index_is_refused(tmp_path):
  gallery, _ = _gallery(n=100)
  out = tmp_path / 'index'
  store.build(gallery, np.arange(100), step=3, index_config=_config('auto'), out_dir=str(out))
  with pytest.raises(errors.UserError, match='dimension|-d embeddings'):
    store.load(str(out), expected_dim=64)
  with pytest.raises(errors.UserError, match='step 3'):
    store.load(str(out), expected_step=4)
  ids = np.load(out / 'ids.npy')
  np.save(out / 'ids.npy', ids[::-1])
  with pytest.raises(errors.UserError, match='damaged.*ids.npy'):
    store.load(str(out))
  (out / 'manifest.json').write_text('{not json')
  with pytest.raises(errors.UserError, match='unreadable'):
    store.load(str(out))

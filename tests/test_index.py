"""ScaNN index: agreement with exact top-K, moving the folder, and refusing damage; the
indexed captions (`index/text_store.py`)."""

import shutil

import ml_collections
import numpy as np
import pytest

from jaxret import errors
from jaxret.index import exact
from jaxret.index import store
from jaxret.index import text_store


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


def test_indexed_captions_search_exactly_and_refuse_damage(tmp_path):
  captions, queries = _gallery(n=1500)  # Above brute_force_below=1000: a ScaNN tree.
  texts = np.array([f'caption {i}' for i in range(1500)])
  image_ids = np.arange(1500) // 5 + 100
  out = tmp_path / 'a' / 'texts'
  config = _config('auto')
  config.brute_force_below = 1000
  manifest = text_store.build(texts, image_ids, captions, step=3, index_config=config,
                              out_dir=str(out), split='test')
  assert manifest['num_texts'] == 1500 and manifest['build_params']['method'] == 'tree_ah'
  shutil.move(str(tmp_path / 'a'), str(tmp_path / 'b'))  # A moved workdir still serves.
  out = tmp_path / 'b' / 'texts'
  found = text_store.load(str(out), expected_step=3, expected_dim=32)
  caption_ids, scores = found.search(queries, 10)
  rows, _ = exact.top_k(queries, captions, 10)
  assert np.mean([len(set(f) & set(r)) / 10 for f, r in zip(caption_ids, rows)]) >= 0.95
  np.testing.assert_allclose(scores, np.take_along_axis(queries @ captions.T, caption_ids, 1),
                             atol=1e-4)
  assert found.captions(caption_ids[0][:2]) == (texts[caption_ids[0][:2]].tolist(),
                                                image_ids[caption_ids[0][:2]].tolist())
  with pytest.raises(errors.UserError, match='from step 3, the images from step 4'):
    text_store.load(str(out), expected_step=4)
  with pytest.raises(errors.UserError, match='64-d'):
    text_store.load(str(out), expected_step=3, expected_dim=64)
  np.save(out / 'texts.npy', texts[::-1])
  with pytest.raises(errors.UserError, match='captions .* are damaged'):
    text_store.load(str(out), expected_step=3)
  with pytest.raises(errors.UserError, match='index.texts=True'):
    text_store.load(str(tmp_path / 'none'), expected_step=3)
  with pytest.raises(errors.UserError, match='export with captions'):
    text_store.build(texts[:0], image_ids[:0], captions[:0], step=3, index_config=config,
                     out_dir=str(tmp_path / 'empty'))


def _exact_ids(queries, vectors_by_id, k):
  ids = list(vectors_by_id)
  rows, _ = exact.top_k(queries, np.stack([vectors_by_id[i] for i in ids]), k)
  return [[ids[r] for r in row] for row in rows]


@pytest.mark.parametrize('method, id_kind', [('brute_force', 'str'), ('tree_ah', 'int')])
def test_add_update_delete_without_rebuild(tmp_path, method, id_kind):
  gallery, queries = _gallery(n=1500)
  make_id = (lambda i: f'img-{i}') if id_kind == 'str' else (lambda i: 1000 + i)
  ids = [make_id(i) for i in range(1000)]
  store.build(gallery[:1000], np.asarray(ids), step=5, index_config=_config(method),
              out_dir=str(tmp_path / 'index'))
  index = store.load(str(tmp_path / 'index'))
  vectors = {image_id: gallery[row] for row, image_id in enumerate(ids)}

  # Add 500 new items, replace 3 and delete 200 (from the middle, the end and new ones).
  new_ids = [make_id(i) for i in range(1000, 1500)]
  assert index.upsert(new_ids, gallery[1000:]) == (500, 0)
  vectors.update(zip(new_ids, gallery[1000:]))
  replaced = ids[:3]
  assert index.upsert(replaced, gallery[[1400, 1401, 1402]]) == (0, 3)
  vectors.update(zip(replaced, gallery[[1400, 1401, 1402]]))
  doomed = ids[100:250] + [ids[-1]] + new_ids[-49:]
  assert index.delete(doomed) == 200
  for image_id in doomed:
    del vectors[image_id]
  assert len(index) == len(vectors) == 1300

  def check(loaded):
    found, scores = loaded.search(queries, 10)
    assert not set(found.ravel().tolist()) & set(doomed)
    expected = _exact_ids(queries, vectors, 10)
    recall = np.mean([len(set(f) & set(e)) / 10 for f, e in zip(found.tolist(), expected)])
    assert recall >= (1.0 if method == 'brute_force' else 0.95)
    # Every returned id's score is the inner product with that id's current vector.
    true_scores = np.array([[queries[q] @ vectors[i] for i in found[q].tolist()]
                            for q in range(len(queries))])
    np.testing.assert_allclose(scores, true_scores, atol=1e-4)

  check(index)
  manifest = index.save()
  assert manifest['num_items'] == 1300
  assert manifest['changes_since_build'] == {'added': 500, 'updated': 3, 'deleted': 200}
  # Saved atomically with fresh checksums; the moved copy loads with the changes.
  shutil.copytree(tmp_path / 'index', tmp_path / 'copy')
  check(store.load(str(tmp_path / 'copy'), expected_step=5))
  assert not [p for p in tmp_path.iterdir() if p.name not in ('index', 'copy')]


def test_bad_changes_are_refused_and_change_nothing(tmp_path):
  gallery, queries = _gallery(n=100)
  store.build(gallery, np.arange(100), step=1, index_config=_config('auto'),
              out_dir=str(tmp_path / 'index'))
  index = store.load(str(tmp_path / 'index'))
  before = index.search(queries, 5)
  with pytest.raises(errors.UserError, match='unknown image ids: 100, 7777; nothing was deleted'):
    index.delete([3, 100, 7777])
  with pytest.raises(errors.UserError, match='int ids'):
    index.delete(['3'])
  with pytest.raises(errors.UserError, match='int ids'):
    index.upsert(['x'], gallery[:1])
  with pytest.raises(errors.UserError, match='twice'):
    index.upsert([200, 200], gallery[:2])
  with pytest.raises(errors.UserError, match='dimension 32'):
    index.upsert([200], gallery[:1, :16])
  with pytest.raises(errors.UserError, match='L2-normalised'):
    index.upsert([200], 2 * gallery[:1])
  with pytest.raises(errors.UserError, match='finite'):
    index.upsert([200], np.full((1, 32), np.nan, np.float32))
  with pytest.raises(errors.UserError, match='at least one'):
    index.delete(list(range(100)))
  assert len(index) == 100
  after = index.search(queries, 5)
  np.testing.assert_array_equal(before[0], after[0])


def test_model_check_uses_the_probe(tmp_path):
  gallery, _ = _gallery(n=50)
  texts = np.array(['a red circle', 'a blue square'])
  store.build(gallery, np.arange(50), step=2, index_config=_config('auto'),
              out_dir=str(tmp_path / 'index'), probe=(texts, gallery[:2]))
  index = store.load(str(tmp_path / 'index'))
  store.check_model(index, lambda t: gallery[:2] + 1e-5)  # The same model.
  with pytest.raises(errors.UserError, match='not the one that made this index'):
    store.check_model(index, lambda t: gallery[2:4])
  with pytest.raises(errors.UserError, match='shape'):
    store.check_model(index, lambda t: gallery[:2, :16])


def test_large_k_on_a_tree_returns_k_real_hits(tmp_path):
  """Asking for more neighbours than the searched leaves hold still returns k exact hits."""
  gallery, queries = _gallery(n=1000)
  config = _config('tree_ah')
  config.num_leaves, config.num_leaves_to_search, config.reorder = 10, 1, 20
  store.build(gallery, np.arange(1000), step=1, index_config=config,
              out_dir=str(tmp_path / 'index'))
  found, scores = store.load(str(tmp_path / 'index')).search(queries[:5], 600)
  assert np.isfinite(scores).all()
  for q in range(5):
    assert len(set(found[q].tolist())) == 600
    np.testing.assert_allclose(scores[q], gallery[found[q]] @ queries[q], atol=1e-4)


def _filtered_exact(queries, vectors, passed, k):
  rows = np.flatnonzero(passed)
  found, _ = exact.top_k(queries, vectors[rows], min(k, len(rows)))
  return rows[found]


@pytest.mark.parametrize('method', ['brute_force', 'tree_ah'])
def test_filtered_search_returns_only_passing_items(tmp_path, method):
  vectors, queries = _gallery(n=3000, d=16)
  ids = np.arange(3000) * 7
  metadata = [{'tag': 'abcdefghij'[i % 10], 'year': 1990 + i % 40,
               'day': f'2020-01-{1 + i % 28:02d}'} for i in range(3000)]
  metadata[5] = {'tag': 'a'}  # Missing fields pass no condition on them.
  store.build(vectors, ids, step=1, index_config=_config(method), out_dir=str(tmp_path),
              metadata=metadata)
  index = store.load(str(tmp_path))
  assert index.metadata.types == {'tag': 'string', 'year': 'number', 'day': 'date'}
  assert index.metadata.row(5) == {'tag': 'a'}
  assert index.metadata.row(6) == {'tag': 'g', 'year': 1996, 'day': '2020-01-07'}
  tags = np.array([m['tag'] for m in metadata])
  years = np.array([m.get('year', np.nan) for m in metadata])
  days = np.array([int(m['day'][-2:]) if 'day' in m else 0 for m in metadata])
  cases = [
      ({'tag': 'a'}, tags == 'a'),
      ({'tag': {'in': ['a', 'b', 'c', 'd', 'e']}}, np.isin(tags, list('abcde'))),
      ({'year': {'gte': 2000, 'lt': 2010}}, (years >= 2000) & (years < 2010)),
      ({'tag': {'in': ['b', 'z']}, 'year': {'gt': 2020}}, (tags == 'b') & (years > 2020)),
      ({'day': {'lte': '2020-01-03'}}, (days >= 1) & (days <= 3)),
      ({'year': 1995}, years == 1995),
      ({'tag': 'nowhere'}, np.zeros(3000, bool)),
  ]
  for expression, expected in cases:
    mask = index.filter_mask(expression)
    np.testing.assert_array_equal(mask.passed, expected, err_msg=str(expression))
    found, scores, report = index.search_filtered(queries[:20], 10, mask)
    strategy = report['strategy']
    assert report['matched'] == expected.sum()
    assert found.shape == (20, min(10, expected.sum()))
    assert set(found.ravel().tolist()) <= set(ids[expected].tolist())
    assert strategy == ('exact' if method == 'brute_force' or expected.mean() < 0.05
                        else 'scann')
    truth = ids[_filtered_exact(queries[:20], vectors, expected, 10)]
    recall = np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]
                     if expected.any() else 1.0)
    assert recall >= 0.95, (expression, recall)
    assert np.all(np.diff(scores, axis=1) <= 1e-6)


@pytest.mark.parametrize('expression, fragment', [
    ({'color': 'red'}, "unknown filter field 'color'"),
    ({'tag': ['a']}, 'malformed filter'),
    ({'tag': {'eq': 'a'}}, 'malformed filter'),
    ({'tag': {'in': []}}, 'non-empty list'),
    ({'tag': {'in': 'a'}}, 'non-empty list'),
    ({'tag': {'gte': 'a'}}, 'ranges apply to numbers and dates'),
    ({'tag': 3}, 'is not a string'),
    ({'year': 'x'}, 'is not a number'),
    ({'year': {'gte': True}}, 'is not a number'),
    ({'day': {'gte': '2020-13-01'}}, 'is not a date'),
    ({'tag': {'in': ['a'], 'gte': 1}}, 'cannot be combined'),
    (['tag'], 'must be an object'),
])
def test_bad_filters_are_refused(tmp_path, expression, fragment):
  vectors, _ = _gallery(n=60, d=8)
  store.build(vectors, np.arange(60), step=1, index_config=_config('brute_force'),
              out_dir=str(tmp_path), metadata=[{'tag': 'a', 'year': 2000, 'day': '2020-01-01'}
                                               for _ in range(60)])
  with pytest.raises(errors.UserError, match=fragment):
    store.load(str(tmp_path)).filter_mask(expression)


def test_metadata_follows_changes_and_bad_metadata_changes_nothing(tmp_path):
  vectors, _ = _gallery(n=60, d=8)
  store.build(vectors, np.arange(60), step=1, index_config=_config('brute_force'),
              out_dir=str(tmp_path), metadata=[{'tag': 'old'} for _ in range(60)])
  index = store.load(str(tmp_path))
  index.upsert([100, 3], vectors[:2], [{'tag': 'new', 'when': '2021-05-06'}, None])
  index.delete([0, 1])  # Rows move: the metadata moves with them.
  index.save()
  index = store.load(str(tmp_path))
  assert index.metadata.row(index.ids.tolist().index(100)) == {'tag': 'new', 'when': '2021-05-06'}
  assert index.metadata.row(index.ids.tolist().index(3)) == {'tag': 'old'}  # None kept it.
  stale = index.filter_mask({'tag': 'new'})
  assert index.ids[stale.passed].tolist() == [100]
  index.upsert([300], vectors[:1], [{'tag': 'new'}])  # A change after the mask: it is redone.
  found, _, report = index.search_filtered(vectors[:1], 5, stale)
  assert report['matched'] == 2 and set(found[0].tolist()) == {100, 300}
  index.delete([300])
  np.testing.assert_allclose(index.vector_of(100), vectors[0])
  before = (index.ids.copy(), {k: v.copy() for k, v in index.metadata.columns.items()})
  for bad in ([{'tag': 5}], [{'when': 'yesterday'}], [{'x': [1]}], [{'': 1}], ['tag']):
    with pytest.raises(errors.UserError):
      index.upsert([200], vectors[:1], bad)
  with pytest.raises(errors.UserError, match='holds strings'):  # Two new types in one call.
    index.upsert([201, 202], vectors[:2], [{'colour': 'red'}, {'colour': 7}])
  np.testing.assert_array_equal(index.ids, before[0])
  assert set(index.metadata.columns) == set(before[1])
  for name, column in before[1].items():
    np.testing.assert_array_equal(index.metadata.columns[name], column)

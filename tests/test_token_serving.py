"""FILIP served as trained (token-wise re-ranking of a pooled shortlist) and GET /explain.

One tiny FILIP workdir (`configs/filip.py:runlocal`, `--mode=demo`: trained,
evaluated, exported and indexed with its patch tokens in bfloat16) is served
in-process for the whole module, from a copy that the write tests change.
"""

import base64
import json
import shutil
import threading
import urllib.error
import urllib.parse
import urllib.request

import ml_dtypes
import numpy as np
import pytest

from conftest import digest
from conftest import run_main
from jaxret import errors
from jaxret.index import token_store

TINY = 'configs/filip.py:runlocal'


# The store, without a model.

@pytest.mark.parametrize('dtype', ['float32', 'bfloat16', 'int8'])
def test_stored_tokens_round_trip_within_their_precision(dtype, tmp_path):
  rng = np.random.default_rng(0)
  tokens = rng.normal(size=(5, 6, 8)).astype(np.float32)
  tokens /= np.linalg.norm(tokens, axis=-1, keepdims=True)
  manifest = token_store.save(str(tmp_path / 'tokens'), np.arange(5) + 10, tokens, dtype=dtype,
                              model_step=3)
  stored = token_store.load(str(tmp_path / 'tokens'), expected_step=3)
  back = stored.tokens([12, 10])
  if dtype == 'float32':
    np.testing.assert_array_equal(back, tokens[[2, 0]])
  elif dtype == 'bfloat16':  # 8 significant bits: relative error below 2^-8.
    np.testing.assert_allclose(back, tokens[[2, 0]], rtol=2 ** -8, atol=0)
  else:  # Rounded to the nearest of 255 steps of max|x| / 127.
    scale = np.max(np.abs(tokens[[2, 0]]), axis=-1, keepdims=True) / 127
    assert np.all(np.abs(back - tokens[[2, 0]]) <= scale / 2 + 1e-7)
  values = {'float32': 4, 'bfloat16': 2, 'int8': 1}[dtype]
  scales = 6 * 4 if dtype == 'int8' else 0
  assert manifest['bytes_per_image'] == 6 * 8 * values + scales
  assert manifest['bytes'] == 5 * manifest['bytes_per_image']
  assert manifest['float32_bytes'] == 5 * 6 * 8 * 4
  # Changes persist; ids without tokens are refused in one line.
  stored.upsert([99, 10], tokens[[4, 3]])
  stored.delete([11])
  stored.save()
  reloaded = token_store.load(str(tmp_path / 'tokens'))
  assert reloaded.ids.tolist() == [10, 12, 13, 14, 99]
  np.testing.assert_allclose(reloaded.tokens([99, 10]), tokens[[4, 3]], atol=1e-2)
  with pytest.raises(errors.UserError, match='no stored patch tokens for image id 11'):
    reloaded.tokens([11])


def test_damaged_or_stale_token_store_is_refused(tmp_path):
  tokens = np.ones((2, 4, 3), np.float32) / np.sqrt(3)
  token_store.save(str(tmp_path / 'tokens'), np.arange(2), tokens, dtype='bfloat16',
                   model_step=1)
  with pytest.raises(errors.UserError, match='come from step 1'):
    token_store.load(str(tmp_path / 'tokens'), expected_step=2)
  np.save(tmp_path / 'tokens' / 'tokens.npy', np.zeros((2, 4, 3), ml_dtypes.bfloat16)
          .view(np.uint16))
  with pytest.raises(errors.UserError, match='damaged'):
    token_store.load(str(tmp_path / 'tokens'))
  with pytest.raises(errors.UserError, match="unknown index.token_dtype 'int4'"):
    token_store.quantize(tokens, 'int4')


# A trained FILIP workdir, served.

@pytest.fixture(scope='module')
def filip(tmp_path_factory):
  """(service, HTTP base URL, workdir, eval results, exported arrays, token embedder)."""
  # pylint: disable=import-outside-toplevel
  from configs import filip as filip_config
  from jaxret.serve import server as server_lib
  from jaxret.serve import service as service_lib
  trained = tmp_path_factory.mktemp('filip')
  result = run_main('--mode=demo', f'--config={TINY}', f'--workdir={trained}')
  assert 'patch tokens (bfloat16' in result.stdout, result.stdout
  workdir = tmp_path_factory.mktemp('filip-copy') / 'workdir'
  shutil.copytree(trained, workdir)
  config = filip_config.get_config('runlocal')
  service = service_lib.from_workdir(config, str(workdir))
  server = server_lib.make_server(service, '127.0.0.1', 0)
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  results = json.loads((workdir / 'eval' / 'results.json').read_text())
  with np.load(workdir / 'export' / 'embeddings.npz') as exported:
    arrays = {name: exported[name] for name in exported.files}
  try:
    yield service, server.url, workdir, results, arrays, config
  finally:
    server.shutdown()
    server.server_close()
    service.close()


def _get(url, path, **params):
  """(status, JSON body) of a GET."""
  try:
    with urllib.request.urlopen(f'{url}{path.lstrip("/")}?{urllib.parse.urlencode(params)}',
                                timeout=60) as response:
      return response.status, json.loads(response.read())
  except urllib.error.HTTPError as e:
    return e.code, json.loads(e.read())


def _ranks(service, texts, wanted, k=10):
  ranks = []
  for start in range(0, len(texts), 64):
    found = service.search([str(t) for t in texts[start:start + 64]], k)
    for result, image_id in zip(found['results'], wanted[start:start + 64]):
      ids = result['ids']
      ranks.append(ids.index(int(image_id)) if int(image_id) in ids else k)
  return np.asarray(ranks), found


def test_served_recall_equals_the_evaluators_token_wise_recall(filip):
  service, _, _, results, arrays, _ = filip
  ranks, found = _ranks(service, arrays['texts'], arrays['text_image_ids'])
  assert found['shortlist'] == 64  # The whole tiny gallery: the served ranking is token-wise.
  for k in (1, 5, 10):
    served = 100 * np.mean(ranks < k)
    assert abs(served - 100 * results[f't2i/R@{k}']) <= 0.5, (k, served, results)


def _numpy_token_wise(text_tokens, text_mask, patch_tokens):
  """1/|real| Σ_real words max_patches word · patch, for one caption against each image."""
  similarity = np.einsum('td,ipd->itp', text_tokens, patch_tokens)
  best = similarity.max(axis=2)[:, text_mask > 0]
  return best.mean(axis=1)


def test_token_scores_are_the_token_wise_score_and_order_the_hits(filip):
  # pylint: disable=import-outside-toplevel
  from jaxret.data import pipeline
  from jaxret.data import sources
  from jaxret.inference import restore as restore_lib
  service, _, workdir, _, arrays, config = filip
  restored = restore_lib.restore(config, str(workdir), service.model_step)
  model, params = restored.model, restored.params
  records = sources.load_split(config.data, 'test')
  patches = np.asarray(model.apply({'params': params}, pipeline.normalize_images(
      records.images, config.data), method=model.encode_image_tokens)[0])
  row = 7
  text = str(arrays['texts'][row])
  tokens, mask = restored.tokenizer.encode([text])
  words = np.asarray(model.apply({'params': params}, tokens, mask,
                                 method=model.encode_text_tokens)[0])[0]
  expected = dict(zip(np.asarray(records.image_ids).tolist(),
                      _numpy_token_wise(words, mask[0], patches)))
  found = service.search([text], 10)['results'][0]
  # Stored in bfloat16: scores within its precision of the float32 ones, hits in their order.
  np.testing.assert_allclose(found['token_scores'], [expected[i] for i in found['ids']],
                             atol=1e-2)
  assert found['token_scores'] == sorted(found['token_scores'], reverse=True)
  pooled = arrays['image_emb'] @ arrays['text_emb'][row]
  np.testing.assert_allclose(found['fast_scores'],
                             [pooled[arrays['image_ids'].tolist().index(i)] for i in found['ids']],
                             atol=1e-3)
  # A shortlist smaller than the gallery: the hits come from the pooled top 25 only.
  service.tokenwise.num_candidates = 25
  try:
    short = service.search([text], 10)
  finally:
    service.tokenwise.num_candidates = config.index.token_shortlist
  assert short['shortlist'] == 25
  top25 = set(arrays['image_ids'][np.argsort(-pooled, kind='stable')[:25]].tolist())
  assert set(short['results'][0]['ids']) <= top25


def test_explain_gives_each_words_heatmap_and_refuses_unknown_ids(filip):
  service, url, workdir, _, arrays, _ = filip
  text, image_id = str(arrays['texts'][3]), int(arrays['image_ids'][0])
  status, body = _get(url, '/explain', q=text, id=image_id)
  assert status == 200, body
  assert body['query'] == text and body['id'] == image_id and body['image_size'] == [64, 64]
  filip_map = body['scorers']['filip']
  assert filip_map['words'] == ['[CLS]', *text.split(), '[SEP]']
  assert filip_map['grid'] == [8, 8]  # 64x64 images in 8x8 patches.
  heatmaps = np.asarray(filip_map['heatmaps'])
  assert heatmaps.shape == (len(filip_map['words']), 64)
  assert filip_map['best_patch'] == np.argmax(heatmaps, axis=1).tolist()
  # The word-patch matches are the terms of the token-wise score of this hit.
  hits = service.search([text], 64)['results'][0]
  token_score = hits['token_scores'][hits['ids'].index(image_id)]
  assert filip_map['score'] == pytest.approx(token_score, abs=1e-4)
  assert np.mean(heatmaps.max(axis=1)) == pytest.approx(token_score, abs=1e-4)
  assert service.health()['explainers'] == ['filip']
  # Bad requests: one line each, nothing in the workdir changes.
  before = digest(workdir)
  for params, code, fragment in [({'q': text, 'id': 123}, 404, 'not in the gallery'),
                                 ({'q': text, 'id': 'x'}, 400, 'not an integer'),
                                 ({'q': text}, 400, 'missing parameter'),
                                 ({'q': '', 'id': image_id}, 400, 'empty query')]:
    status, body = _get(url, '/explain', **params)
    assert status == code and fragment in body['error'] and '\n' not in body['error'], body
  with pytest.raises(errors.UserError, match='not in the gallery'):
    service.explain(text, 123)
  assert digest(workdir) == before


def test_items_added_and_deleted_keep_their_patch_tokens(filip):
  service, _, workdir, _, arrays, _ = filip
  original = int(arrays['image_ids'][5])
  png = service.gallery.png(original)
  text = str(arrays['texts'][5 * 5])  # A caption of image 5.
  with pytest.raises(errors.UserError, match='send "image" instead'):
    service.add_items([{'id': 77, 'embedding': arrays['image_emb'][0].tolist()}])
  service.add_items([{'id': 900001, 'image': base64.b64encode(png).decode()}])
  stored = json.loads((workdir / 'tokens' / 'manifest.json').read_text())
  assert stored['num_items'] == 65
  hits = service.search([text], 65)['results'][0]
  scores = dict(zip(hits['ids'], hits['token_scores']))
  # A copy of image 5, tokenised by the same tower: it scores as image 5 does.
  assert scores[900001] == pytest.approx(scores[original], abs=1e-2)
  service.delete_items([900001])
  assert json.loads((workdir / 'tokens' / 'manifest.json').read_text())['num_items'] == 64
  assert 900001 not in service.search([text], 64)['results'][0]['ids']

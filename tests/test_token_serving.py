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


def test_filters_and_image_queries_compose_with_the_token_wise_order(filip):
  service, url, _, _, arrays, _ = filip
  text = str(arrays['texts'][3])
  expression = {'layout': service.index.metadata.row(0)['layout']}
  passed = set(service.index.ids[service.index.filter_mask(expression).passed].tolist())
  assert 0 < len(passed) < len(service.index)
  everything = service.search([text], 64)['results'][0]
  token_score = dict(zip(everything['ids'], everything['token_scores']))
  # A filtered text search: the passing shortlist, re-ordered token-wise.
  status, found = _post(url, '/search', {'queries': [text], 'k': 5, 'filter': expression})
  assert status == 200, found
  hits = found['results'][0]
  assert found['filter']['matched'] == len(passed) and set(hits['ids']) <= passed
  assert hits['token_scores'] == sorted(hits['token_scores'], reverse=True)
  np.testing.assert_allclose(hits['token_scores'], [token_score[i] for i in hits['ids']],
                             atol=1e-4)
  left_out = [token_score[i] for i in passed - set(hits['ids'])]
  assert min(hits['token_scores']) >= max(left_out) - 1e-4
  # An image query is served in the pooled order: it has no words to score token-wise.
  image_id = int(arrays['image_ids'][0])
  status, by_image = _post(url, '/search', {'image_id': image_id, 'k': 5})
  assert status == 200, by_image
  assert 'shortlist' not in by_image and 'token_scores' not in by_image['results'][0]
  assert by_image['results'][0]['ids'][0] == image_id
  fast = by_image['results'][0]['fast_scores']
  assert fast == sorted(fast, reverse=True)


def _post(url, path, body):
  """(status, JSON body) of a POST."""
  request = urllib.request.Request(f'{url}{path.lstrip("/")}', json.dumps(body).encode(),
                                   {'Content-Type': 'application/json'})
  try:
    with urllib.request.urlopen(request, timeout=60) as response:
      return response.status, json.loads(response.read())
  except urllib.error.HTTPError as e:
    return e.code, json.loads(e.read())


def test_items_added_and_deleted_keep_their_patch_tokens(filip):
  service, _, workdir, _, arrays, _ = filip
  original = int(arrays['image_ids'][5])
  png, _ = service.gallery.picture(original)
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


def test_web_page_overlays_a_hits_heatmaps_on_click(filip, tmp_path):
  # pylint: disable=import-outside-toplevel
  from selenium import webdriver
  from selenium.webdriver.chrome.service import Service
  from selenium.webdriver.common.by import By
  from selenium.webdriver.support.ui import WebDriverWait
  _, url, _, _, arrays, _ = filip
  options = webdriver.ChromeOptions()
  options.binary_location = shutil.which('chromium') or shutil.which('chromium-browser')
  for flag in ('--headless', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage',
               '--disable-background-networking', '--disable-component-update',
               '--disable-sync', '--no-first-run', f'--user-data-dir={tmp_path / "profile"}'):
    options.add_argument(flag)
  browser = webdriver.Chrome(options=options,
                             service=Service(executable_path=shutil.which('chromedriver')))
  try:
    browser.get(url)
    wait = WebDriverWait(browser, 30)
    wait.until(lambda b: 'images' in b.find_element(By.ID, 'about').text)
    text = str(arrays['texts'][7])
    browser.find_element(By.ID, 'query').send_keys(text + '\n')
    wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, 'figure.hit')) == 10)
    hit = browser.find_elements(By.CSS_SELECTOR, 'figure.hit')[1]
    hit_id = hit.find_element(By.TAG_NAME, 'img').get_attribute('alt').split()[-1]
    hit.click()
    canvases = 'section[data-scorer="filip"] figure.heatmap canvas'
    words = ['[CLS]', *text.split(), '[SEP]']
    wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, canvases)) == len(words))
    captions = browser.find_elements(By.CSS_SELECTOR, '#explain figure.heatmap figcaption')
    assert [c.text for c in captions] == words
    assert f'image {hit_id}' in browser.find_element(By.CSS_SELECTOR, '#explain h3').text
    # Each word's best patch is the reddest: full overlay over the thumbnail's pixels.
    _, body = _get(url, '/explain', q=text, id=hit_id)
    best = body['scorers']['filip']['best_patch'][1]
    red = browser.execute_script('''
        const canvas = arguments[0], cell = canvas.width / 8;
        const x = (arguments[1] % 8 + 0.5) * cell, y = (Math.floor(arguments[1] / 8) + 0.5) * cell;
        const low = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
        const pixel = canvas.getContext('2d').getImageData(x, y, 1, 1).data;
        return [pixel[0], pixel[1], pixel[2], low.length];''',
                                 browser.find_elements(By.CSS_SELECTOR, canvases)[1], best)
    assert red[3] == 96 * 96 * 4
    assert red[0] >= 0.7 * 255 and red[0] > red[1] and red[0] > red[2], red
  finally:
    browser.quit()


# The slow models' maps, on tiny untrained models (no workdir needed).

SLOW_TEXTS = ['a red circle', 'a big blue square on the left']


def _slow_model(kind):
  # pylint: disable=import-outside-toplevel
  import jax
  from jaxret.data import tokenizer as tokenizer_lib
  from jaxret.models import albef
  from jaxret.models import slow
  tokenizer = tokenizer_lib.build_word_level(SLOW_TEXTS, max_len=10)
  if kind == 'caption':
    model = slow.SlowCaptioner(vocab_size=tokenizer.vocab_size, text_len=10,
                               image={'variant': 'mu/8'}, decoder={'variant': 'mu', 'depth': 2})
  else:
    model = albef.Albef(vocab_size=tokenizer.vocab_size, text_len=10, image={'variant': 'mu/8'},
                        text={'variant': 'mu', 'depth': 1},
                        fusion={'variant': 'mu', 'depth': 2}, embed_dim=16)
  images = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(np.float32)
  tokens, mask = tokenizer.encode(SLOW_TEXTS)
  params = jax.jit(model.init)(jax.random.PRNGKey(0), images, tokens, mask)['params']
  visual = np.asarray(jax.jit(lambda p, x: model.apply({'params': p}, x,
                                                       method=model.visual_tokens))(params, images))
  return model, params, tokenizer, visual, tokens, mask


def test_captioner_cross_attention_maps_are_the_attention_it_scores_with():
  # pylint: disable=import-outside-toplevel
  import jax
  from jaxret.rerank import attention_maps
  model, params, _, visual, tokens, mask = _slow_model('caption')
  positions, maps = attention_maps.WordMaps(model).captioner_cross_attention(
      params, visual[1], tokens[1], mask[1])
  real = int(mask[1].sum())
  assert positions == list(range(1, real)) and maps.shape == (real - 1, visual.shape[1])
  np.testing.assert_allclose(maps.sum(axis=1), 1, atol=1e-5)  # Softmax rows, averaged.
  # The recorded path (explicit weights, then values) scores exactly as the fused one.
  fused = jax.jit(lambda *inputs: model.apply({'params': params}, *inputs,
                                              method=model.score))(visual, tokens, mask)
  recorded, _ = jax.jit(lambda *inputs: model.apply(
      {'params': params}, *inputs, method=model.score, mutable=['intermediates']))(
          visual, tokens, mask)
  np.testing.assert_allclose(recorded, fused, rtol=1e-5, atol=1e-5)


def test_albef_grad_cam_is_relu_gradient_times_attention():
  # pylint: disable=import-outside-toplevel
  import jax
  from jaxret.rerank import attention_maps
  model, params, _, visual, tokens, mask = _slow_model('albef')
  positions, cam = attention_maps.WordMaps(model).albef_grad_cam(params, visual[1], tokens[1],
                                                                 mask[1], 1)
  real = int(mask[1].sum())
  assert positions == list(range(real)) and cam.shape == (real, visual.shape[1])
  # Independently: the gradient by central finite differences of a perturbation of the
  # attention weights, and the weights themselves, for a few (word, visual token) cells.
  inputs = (visual[1:], tokens[1:], mask[1:])
  _, state = jax.jit(lambda *inputs: model.apply(
      {'params': params}, *inputs, method=model.score,
      mutable=['perturbations', 'intermediates']))(*inputs)
  zero = state['perturbations']
  weights = np.asarray(state['intermediates']['fusion_encoder']['block01']['cross_attention']
                       ['weights'][0])[0]  # (heads, L, T)

  perturbed_score = jax.jit(lambda bumped: model.apply(
      {'params': params, 'perturbations': bumped}, *inputs, method=model.score)[0])

  def score_with(head, word, token, eps):
    bumped = jax.tree_util.tree_map(np.array, zero)
    cell = bumped['fusion_encoder']['block01']['cross_attention']['attention_weights']
    cell[0, head, word, token] += eps
    return float(perturbed_score(bumped))

  eps = 1e-2
  for word, token in [(0, 0), (1, 5), (real - 1, 16)]:
    grads = np.array([(score_with(h, word, token, eps) - score_with(h, word, token, -eps))
                      / (2 * eps) for h in range(weights.shape[0])])
    expected = np.mean(np.maximum(grads, 0) * weights[:, word, token])
    assert cam[word, token] == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize('kind, name', [('caption', 'cross_attention'), ('albef', 'grad_cam')])
def test_service_explains_with_the_slow_model(kind, name, tmp_path):
  # pylint: disable=import-outside-toplevel
  import ml_collections
  from jaxret.index import store
  from jaxret.rerank import reranker as reranker_lib
  from jaxret.rerank import scorer as scorer_lib
  from jaxret.serve import explain as explain_lib
  from jaxret.serve import service as service_lib
  model, params, tokenizer, visual, _, _ = _slow_model(kind)
  scorer = scorer_lib.SlowScorer(model, params, ml_collections.ConfigDict(
      {'image_mean': (0.5,) * 3, 'image_std': (0.5,) * 3}), candidate_buckets=(2,),
                                 length_buckets=(10,))
  reranker = reranker_lib.FastSlowReranker(scorer, tokenizer, ['a', 'b'], visual,
                                           num_candidates=2, beta=0.0)
  explainers = explain_lib.for_service(None, reranker)
  assert [e.name for e in explainers] == [name]
  vectors = np.eye(2, 4, dtype=np.float32)
  index_dir = str(tmp_path / 'index')
  store.build(vectors, np.array(['a', 'b']), step=1, out_dir=index_dir,
              index_config=ml_collections.ConfigDict(dict(
                  method='brute_force', brute_force_below=10, num_leaves=0,
                  num_leaves_to_search=0, reorder=0, dims_per_block=2,
                  anisotropic_threshold=0.2)))
  service = service_lib.SearchService(store.load(index_dir), None, model_step=1,
                                      reranker=reranker, explainers=explainers)
  try:
    body = service.explain(SLOW_TEXTS[1], 'b')
    found = body['scorers'][name]
    words = ['[CLS]', *SLOW_TEXTS[1].split(), '[SEP]']
    assert found['words'] == (words[1:] if kind == 'caption' else words)
    assert found['grid'] == ([8, 8] if kind == 'caption' else [4, 4])
    assert np.asarray(found['heatmaps']).shape == (len(found['words']), found['grid'][0] ** 2)
    assert found['score'] == pytest.approx(float(reranker.slow_scores(
        *tokenizer.encode([SLOW_TEXTS[1]]), [['b']])[0, 0]), abs=1e-5)
    with pytest.raises(errors.UserError, match='not in the gallery'):
      service.explain(SLOW_TEXTS[1], 'c')
  finally:
    service.close()

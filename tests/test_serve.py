"""`--mode=serve`: the HTTP API, the web page in a browser, bad input, and a load test.

One tiny demo workdir is trained, moved to another folder (a moved workdir must
still serve) and served by `python -m jaxret.main --mode=serve --port=0` on a
free loopback port for the whole module.
"""

import base64
import concurrent.futures
import http.client
import io
import json
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.parse

import numpy as np
import pytest
from PIL import Image

from conftest import REPO
from conftest import run_main
from conftest import subprocess_env
from jaxret import errors
from jaxret.serve import batcher
from jaxret.serve import encoder

TINY = 'configs/demo.py:runlocal'
START_TIMEOUT_S = 240
TOKEN = 'test-write-token-0123456789'
WRITER = {'Authorization': f'Bearer {TOKEN}'}


# Parts that need no model.

def test_length_buckets():
  assert encoder.length_buckets(24) == (8, 16, 24)
  assert encoder.length_buckets(77) == (8, 16, 32, 64, 77)
  assert encoder.length_buckets(8) == (8,)
  assert encoder.bucket(9, (8, 16, 24)) == 16


@pytest.mark.parametrize('text, fragment', [
    ('', 'empty'), ('  \n', 'empty'), ('x' * 1001, '1001 characters'),
    ('a \ud800 b', 'not valid Unicode'), (3, 'must be a string')])
def test_bad_query_texts(text, fragment):
  with pytest.raises(errors.UserError, match=fragment):
    encoder.check_text(text)


def test_micro_batcher_batches_what_is_queued():
  release = threading.Event()
  seen = []

  def process(items):
    release.wait(10)
    seen.append([item.payload for item in items])
    return [item.payload * 10 for item in items]

  worker = batcher.MicroBatcher(process, max_batch=4)
  try:
    first = worker.submit(0)
    time.sleep(0.2)  # The worker holds the first request; the next ones queue up.
    futures = [worker.submit(i) for i in range(1, 7)]
    release.set()
    assert first.result(10) == 0
    assert [f.result(10) for f in futures] == [10, 20, 30, 40, 50, 60]
    assert seen == [[0], [1, 2, 3, 4], [5, 6]]
    assert worker.stats.largest_batch == 4
  finally:
    worker.close()


def test_micro_batcher_survives_a_failing_batch():
  def process(items):
    if any(item.payload == 'bad' for item in items):
      raise ValueError('bad batch')
    return [item.payload for item in items]

  worker = batcher.MicroBatcher(process)
  try:
    with pytest.raises(ValueError):
      worker.submit('bad').result(10)
    assert worker.submit('good').result(10) == 'good'
  finally:
    worker.close()


# The server, end to end.

class Client:
  """A keep-alive HTTP client for one loopback server."""

  def __init__(self, host, port):
    self.host, self.port = host, port
    self.connection = http.client.HTTPConnection(host, port, timeout=60)

  def request(self, method, path, body=None, headers=None):
    """Returns (status, headers, body bytes)."""
    if isinstance(body, (dict, list)):
      body = json.dumps(body).encode()
    for attempt in range(2):  # A connection the server closed (after a 413) is reopened.
      try:
        self.connection.request(method, path, body=body, headers=headers or {})
        response = self.connection.getresponse()
        # Header names are case-insensitive (uvicorn sends them in lower case).
        return response.status, response.headers, response.read()
      except (http.client.RemoteDisconnected, ConnectionError, BrokenPipeError):
        self.connection.close()
        self.connection = http.client.HTTPConnection(self.host, self.port, timeout=60)
        if attempt:
          raise
    raise AssertionError('unreachable')

  def close(self):
    self.connection.close()

  def json(self, method, path, body=None, headers=None):
    status, headers, raw = self.request(method, path, body, headers)
    assert headers['Content-Type'] == 'application/json', (status, raw[:200])
    return status, json.loads(raw)

  def get(self, path, **params):
    return self.json('GET', path + ('?' + urllib.parse.urlencode(params) if params else ''))


@pytest.fixture(scope='module')
def served(tmp_path_factory):
  """(client, workdir, exported arrays) for a server on a moved demo workdir."""
  trained = tmp_path_factory.mktemp('trained')
  run_main('--mode=demo', f'--config={TINY}', f'--workdir={trained}')
  workdir = tmp_path_factory.mktemp('moved') / 'workdir'
  shutil.move(str(trained), str(workdir))
  env = dict(subprocess_env(1), JAXRET_WRITE_TOKEN=TOKEN)
  process = subprocess.Popen(
      [sys.executable, '-m', 'jaxret.main', '--mode=serve', f'--workdir={workdir}', '--port=0'],
      cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    line = _read_line(process, 'serving ', START_TIMEOUT_S)
    url = urllib.parse.urlsplit(line.split(' on ')[-1].strip())
    assert url.hostname == '127.0.0.1'
    with np.load(workdir / 'export' / 'embeddings.npz') as exported:
      arrays = {name: exported[name] for name in exported.files}
    client = Client(url.hostname, url.port)
    yield client, workdir, arrays
    client.close()
  finally:
    process.send_signal(signal.SIGTERM)
    try:
      stderr = process.communicate(timeout=30)[1]
    except subprocess.TimeoutExpired:
      process.kill()
      stderr = process.communicate()[1]
  assert process.returncode == 0, stderr[-3000:]
  assert 'Traceback' not in stderr, stderr[-3000:]


def _read_line(process, prefix, timeout):
  """The first stdout line starting with `prefix`, or a failure with the server's stderr."""
  lines = []
  reader = threading.Thread(target=lambda: lines.extend(iter(process.stdout.readline, '')),
                            daemon=True)
  reader.start()
  deadline = time.time() + timeout
  while time.time() < deadline:
    found = [line for line in lines if line.startswith(prefix)]
    if found:
      return found[0]
    if process.poll() is not None:
      break
    time.sleep(0.1)
  process.kill()
  raise AssertionError(f'server did not start: {lines}\n{process.communicate()[1][-3000:]}')


def _exact_top_k(arrays, text, k):
  row = arrays['texts'].tolist().index(text)
  scores = arrays['image_emb'] @ arrays['text_emb'][row]
  order = np.argsort(-scores, kind='stable')[:k]
  return arrays['image_ids'][order].tolist(), scores[order]


def test_search_returns_the_exact_top_k(served):
  client, _, arrays = served
  text = str(arrays['texts'][7])
  status, body = client.get('/search', q=text, k=5)
  assert status == 200, body
  assert {'query', 'k', 'ids', 'fast_scores', 'image_urls', 'timings_ms', 'model_step',
          'index_size', 'rerank'} <= set(body)
  assert 'slow_scores' not in body  # Present only when re-ranked.
  assert body['query'] == text and body['k'] == 5 and body['rerank'] is False
  assert body['model_step'] == 4 and body['index_size'] == 64
  expected_ids, expected_scores = _exact_top_k(arrays, text, 5)
  # The index of 64 images is brute force: the served ranking is the exact one.
  assert body['ids'] == expected_ids
  np.testing.assert_allclose(body['fast_scores'], expected_scores, atol=1e-3)
  assert body['image_urls'] == [f'/image?id={i}' for i in expected_ids]
  for name in ('queue_ms', 'encode_ms', 'search_ms', 'total_ms'):
    assert body['timings_ms'][name] >= 0
  status, default_k = client.get('/search', q=text)
  assert status == 200 and len(default_k['ids']) == 10


def test_batch_search_matches_single_queries(served):
  client, _, arrays = served
  texts = [str(t) for t in arrays['texts'][[0, 50, 100]]]
  status, body = client.json('POST', '/search', {'queries': texts, 'k': 3})
  assert status == 200, body
  assert [r['query'] for r in body['results']] == texts
  for text, result in zip(texts, body['results']):
    single = client.get('/search', q=text, k=3)[1]
    assert result['ids'] == single['ids']
    np.testing.assert_allclose(result['fast_scores'], single['fast_scores'], atol=1e-5)
    assert result['image_urls'] == single['image_urls']


def test_healthz_page_and_images(served):
  client, _, arrays = served
  status, health = client.get('/healthz')
  assert status == 200 and health['status'] == 'ok'
  assert health['num_items'] == 64 and health['model_step'] == 4 and health['reranker'] is None
  status, headers, page = client.request('GET', '/')
  assert status == 200 and headers['Content-Type'].startswith('text/html')
  assert b'id="search-form"' in page
  image_id = int(arrays['image_ids'][0])
  status, headers, png = client.request('GET', f'/image?id={image_id}')
  assert status == 200 and headers['Content-Type'] == 'image/png'
  assert Image.open(io.BytesIO(png)).size == (64, 64)
  assert client.get('/image', id='12345')[0] == 404
  assert client.get('/image', id='not-a-number')[0] == 400


LONG = ' '.join(['red'] * 40)


@pytest.mark.parametrize('method, path, body, status, fragment', [
    ('GET', '/search?q=', None, 400, 'empty query'),
    ('GET', '/search?q=%20%20', None, 400, 'empty query'),
    ('GET', '/search?k=3', None, 400, 'missing parameter q'),
    ('GET', '/search?q=' + 'x' * 1001, None, 400, 'characters long'),
    ('GET', '/search?q=' + urllib.parse.quote(LONG), None, 400, 'too long for the model'),
    ('GET', '/search?q=a%FFb', None, 400, 'not valid UTF-8'),
    ('GET', '/search?q=a&k=0', None, 400, 'k=0 is out of range'),
    ('GET', '/search?q=a&k=65', None, 400, 'k=65 is out of range'),
    ('GET', '/search?q=a&k=-1', None, 400, 'out of range'),
    ('GET', '/search?q=a&k=ten', None, 400, 'k must be an integer'),
    ('GET', '/search?q=a&rerank=1', None, 400, 'no re-ranker'),
    ('GET', '/search?q=a&rerank=yes', None, 400, 'rerank must be'),
    ('GET', '/search?q=a&kk=3', None, 400, 'unknown parameters'),
    ('POST', '/search', b'{"queries": ["a"', 400, 'malformed JSON'),
    ('POST', '/search', b'\xff\xfe', 400, 'not valid UTF-8'),
    ('POST', '/search', b'["a red circle"]', 400, 'must be an object'),
    ('POST', '/search', {'k': 3}, 400, 'missing "queries"'),
    ('POST', '/search', {'queries': 'a red circle'}, 400, 'non-empty list'),
    ('POST', '/search', {'queries': []}, 400, 'non-empty list'),
    ('POST', '/search', {'queries': ['a', 3]}, 400, 'must be a string'),
    ('POST', '/search', {'queries': ['a', '']}, 400, 'empty query'),
    ('POST', '/search', b'{"queries": ["a \\ud800"]}', 400, 'not valid Unicode'),
    ('POST', '/search', {'queries': ['a'] * 257}, 400, 'the limit is 256'),
    ('POST', '/search', {'queries': ['a'], 'k': 2.5}, 400, 'k must be an integer'),
    ('POST', '/search', {'queries': ['a'], 'k': True}, 400, 'k must be an integer'),
    ('POST', '/search', {'queries': ['a'], 'top': 3}, 400, 'unknown keys'),
    ('POST', '/search', b'{"queries": ["a"], "k": NaN}', 400, 'k must be an integer'),
    ('DELETE', '/items', {'ids': [31337]}, 400, 'unknown image ids: 31337'),
    ('DELETE', '/items', {'ids': ['20000001']}, 400, 'int ids'),
    ('DELETE', '/items', {'ids': []}, 400, 'non-empty list'),
    ('DELETE', '/items', {'id': 3}, 400, '{"ids": [...]}'),
    ('POST', '/items', {'items': [{'id': 5, 'embedding': [1.0, 0.0]}]}, 400, '32 numbers'),
    ('POST', '/items', {'items': [{'id': 5, 'embedding': ['x'] * 32}]}, 400, 'list of numbers'),
    ('POST', '/items', {'items': [{'id': 5}]}, 400, 'exactly one of'),
    ('POST', '/items', {'items': [{'id': 5, 'image': 'not base64!'}]}, 400, 'base64'),
    ('POST', '/items', {'items': [{'id': 5, 'image': base64.b64encode(b'GIF89a').decode()}]},
     400, 'PNG or JPEG'),
    ('POST', '/search', {'queries': ['a'], 'filter': {'tag': 'x'}}, 400,
     "unknown filter field 'tag'"),
    ('POST', '/search', {'queries': ['a'], 'filter': {'layout': ['x']}}, 400, 'malformed filter'),
    ('POST', '/search', {'queries': ['a'], 'filter': {'objects': {'near': 2}}}, 400,
     'malformed filter'),
    ('POST', '/search', {'queries': ['a'], 'filter': 'layout'}, 400, 'malformed filter'),
    ('POST', '/search', {'image': base64.b64encode(b'GIF89a').decode()}, 400, 'PNG or JPEG'),
    ('POST', '/search', {'image': 'not base64!'}, 400, 'base64'),
    ('POST', '/search', {'image_id': 31337}, 400, 'not in the gallery'),
    ('POST', '/search', {'image_id': 3, 'queries': ['a']}, 400, 'not both'),
    ('POST', '/search', {'queries': ['a'], 'budget_ms': 5}, 400, 'applies to re-ranking'),
    ('POST', '/search', {'image_id': 3, 'target': 'pictures'}, 400, 'unknown target'),
    ('POST', '/search', {'image_id': 3, 'target': 3}, 400, 'unknown target'),
    ('POST', '/search', {'queries': ['a'], 'target': 'texts'}, 400, 'text queries search images'),
    ('POST', '/search', {'image_id': 3, 'target': 'texts', 'filter': {'layout': 'x'}}, 400,
     'takes none'),
    ('POST', '/search', {'image_id': 3, 'target': 'texts', 'k': 321}, 400,
     'the gallery has 320 captions'),
    ('POST', '/search', {'image_id': 3, 'target': 'texts', 'rerank': True}, 400,
     'cannot be re-ranked'),
    ('GET', '/nowhere', None, 404, 'no such path'),
    ('PUT', '/search', None, 405, 'not allowed'),
    ('DELETE', '/search', None, 405, 'not allowed'),
])
def test_bad_input_gets_a_4xx_and_the_server_goes_on(served, method, path, body, status,
                                                     fragment):
  client, _, arrays = served
  got, headers, raw = client.request(method, path, body, WRITER if path == '/items' else None)
  assert got == status, raw[:300]
  if fragment is not None:
    assert headers['Content-Type'] == 'application/json'
    assert fragment in json.loads(raw)['error']
  text = str(arrays['texts'][0])
  status, found = client.get('/search', q=text, k=1)
  assert status == 200 and found['index_size'] == 64  # Nothing in the index changed.


def _gallery_metadata(workdir):
  from jaxret.index import store  # pylint: disable=import-outside-toplevel
  index = store.load(str(workdir / 'index'))
  return {image_id: index.metadata.row(row) for row, image_id in enumerate(index.ids.tolist())}


def test_filters_return_the_exact_filtered_top_k(served):
  client, workdir, arrays = served
  metadata = _gallery_metadata(workdir)
  assert set(client.get('/healthz')[1]['metadata_fields']) == {'layout', 'objects', 'colour',
                                                                'shape'}
  layouts = sorted({m['layout'] for m in metadata.values()})
  text = str(arrays['texts'][7])
  for expression, passes in [
      ({'layout': layouts[0]}, lambda m: m['layout'] == layouts[0]),
      ({'objects': {'gte': 2}, 'layout': {'in': layouts[:2]}},
       lambda m: m['objects'] >= 2 and m['layout'] in layouts[:2]),
      ({'shape': 'no such shape'}, lambda m: False)]:
    status, body = client.json('POST', '/search', {'queries': [text], 'k': 5,
                                                   'filter': expression})
    assert status == 200, body
    keep = np.array([passes(metadata[int(i)]) for i in arrays['image_ids']])
    scores = arrays['image_emb'] @ arrays['text_emb'][arrays['texts'].tolist().index(text)]
    order = [r for r in np.argsort(-scores, kind='stable') if keep[r]][:5]
    assert body['results'][0]['ids'] == arrays['image_ids'][order].tolist(), expression
    assert body['filter'] == {'matched': int(keep.sum()), 'strategy': 'exact'}


def test_image_queries(served):
  client, _, arrays = served
  image_id = int(arrays['image_ids'][3])
  status, by_id = client.json('POST', '/search', {'image_id': image_id, 'k': 3})
  assert status == 200, by_id
  result = by_id['results'][0]
  assert result['ids'][0] == image_id and result['fast_scores'][0] == pytest.approx(1, abs=1e-3)
  expected = np.argsort(-(arrays['image_emb'] @ arrays['image_emb'][3]), kind='stable')[:3]
  assert result['ids'] == arrays['image_ids'][expected].tolist()
  png = client.request('GET', f'/image?id={image_id}')[2]
  status, uploaded = client.json('POST', '/search', {'image': base64.b64encode(png).decode(),
                                                     'k': 3})
  assert status == 200, uploaded
  assert uploaded['results'][0]['ids'] == result['ids']
  np.testing.assert_allclose(uploaded['results'][0]['fast_scores'], result['fast_scores'],
                             atol=1e-3)


def test_image_to_text_search(served):
  """An image query with target texts finds the indexed captions: exactly the NumPy top-k
  over the stored caption embeddings (the 64-image index and its 320 captions are brute
  force), each with the image it describes. (The fixture's 4-step model is too little
  trained for an image's own captions to rank high, so exactness is what is checked.)"""
  client, workdir, arrays = served
  stored = np.load(workdir / 'texts' / 'vectors.npy')
  np.testing.assert_array_equal(stored, arrays['text_emb'])
  health = client.get('/healthz')[1]
  assert health['texts'] == len(arrays['texts']) == 320
  row = 3
  image_id = int(arrays['image_ids'][row])
  k = 100  # More than the 64 images: k is bounded by the captions.
  status, body = client.json('POST', '/search', {'image_id': image_id, 'target': 'texts',
                                                 'k': k})
  assert status == 200, body
  assert body['target'] == 'texts' and body['k'] == k
  hit = body['results'][0]
  exact = stored @ arrays['image_emb'][row]
  order = np.argsort(-exact, kind='stable')
  np.testing.assert_allclose(hit['fast_scores'], exact[order[:k]], atol=1e-4)
  # The same captions up to exact ties (the built-in data repeats some captions).
  np.testing.assert_allclose(exact[hit['ids']], hit['fast_scores'], atol=1e-4)
  assert len(set(hit['ids'])) == k
  assert hit['texts'] == arrays['texts'][hit['ids']].tolist()
  assert hit['image_ids'] == arrays['text_image_ids'][hit['ids']].tolist()
  assert hit['image_urls'] == [f'/image?id={i}' for i in hit['image_ids']]
  png = client.request('GET', f'/image?id={image_id}')[2]
  status, uploaded = client.json('POST', '/search', {'image': base64.b64encode(png).decode(),
                                                     'target': 'texts', 'k': 5})
  assert status == 200, uploaded
  np.testing.assert_allclose(uploaded['results'][0]['fast_scores'], hit['fast_scores'][:5],
                             atol=2e-3)
  # Text queries still search images, with or without the explicit target.
  text = str(arrays['texts'][7])
  plain = client.json('POST', '/search', {'queries': [text], 'k': 3})[1]
  explicit = client.json('POST', '/search', {'queries': [text], 'k': 3, 'target': 'images'})[1]
  assert plain['target'] == 'images' and plain['results'] == explicit['results']
  assert plain['results'][0]['ids'] == _exact_top_k(arrays, text, 3)[0]


def test_writes_need_the_token(served):
  client, workdir, _ = served
  manifest = (workdir / 'index' / 'manifest.json').read_bytes()
  delete = json.dumps({'ids': [int(_gallery_ids(client)[0])]}).encode()
  for headers, status, fragment in [
      ({}, 401, 'Authorization: Bearer'),
      ({'Authorization': 'Basic dXNlcjpwdw=='}, 401, 'Authorization: Bearer'),
      ({'Authorization': 'Bearer wrong-token-0123456789'}, 403, 'wrong'),
      ({'Authorization': f'Bearer {TOKEN}x'}, 403, 'wrong')]:
    for method in ('POST', 'DELETE'):
      body = delete if method == 'DELETE' else json.dumps({'items': [{'id': 5}]}).encode()
      got, response_headers, raw = client.request(method, '/items', body, headers)
      assert got == status and fragment in json.loads(raw)['error'], raw
      if status == 401:
        assert response_headers['WWW-Authenticate'] == 'Bearer'
  assert (workdir / 'index' / 'manifest.json').read_bytes() == manifest
  assert client.get('/healthz')[1]['num_items'] == 64


def _gallery_ids(client):
  return [int(url.split('=')[1]) for url in client.get('/search', q='a red circle', k=64)[1][
      'image_urls']]


def test_openapi_schema(served):
  client, _, _ = served
  status, schema = client.get('/openapi.json')
  assert status == 200
  assert {'/search', '/items', '/healthz', '/image'} <= set(schema['paths'])
  post = schema['paths']['/search']['post']['requestBody']['content']['application/json']
  assert post['schema']['$ref'] == '#/components/schemas/SearchRequest'
  fields = schema['components']['schemas']['SearchRequest']['properties']
  assert {'queries', 'image', 'image_id', 'k', 'rerank', 'budget_ms', 'filter',
          'target'} <= set(fields)
  assert fields['target']['enum'] == ['images', 'texts']
  assert 'Item' in schema['components']['schemas']
  get = schema['paths']['/search']['get']
  assert [p['name'] for p in get['parameters']] == ['q', 'k', 'rerank', 'budget_ms']
  answer = get['responses']['200']['content']['application/json']['schema']['$ref']
  assert answer == '#/components/schemas/SingleSearchResponse'
  referenced = set(re.findall(r'#/components/schemas/(\w+)', json.dumps(schema)))
  assert referenced <= set(schema['components']['schemas'])  # Every reference resolves.


def test_oversized_or_lengthless_bodies_are_refused(served):
  client, _, _ = served
  connection = http.client.HTTPConnection(client.host, client.port, timeout=30)
  connection.putrequest('POST', '/search')
  connection.putheader('Content-Length', str(50 << 20))
  connection.endheaders()  # The body is never sent: the server answers from the header.
  response = connection.getresponse()
  assert response.status == 413 and 'over the limit' in json.loads(response.read())['error']
  connection.close()
  connection = http.client.HTTPConnection(client.host, client.port, timeout=30)
  connection.putrequest('POST', '/search')
  connection.endheaders()
  response = connection.getresponse()
  assert response.status == 411 and 'Content-Length' in json.loads(response.read())['error']
  connection.close()
  assert client.get('/healthz')[0] == 200


def test_add_and_delete_items(served):
  client, workdir, arrays = served
  text = str(arrays['texts'][20])
  target = arrays['text_emb'][20]
  image_png = client.request('GET', f'/image?id={int(arrays["image_ids"][3])}')[2]
  items = [{'id': 900001, 'embedding': target.tolist()},
           {'id': 900002, 'image': base64.b64encode(image_png).decode()}]
  status, body = client.json('POST', '/items', {'items': items}, WRITER)
  assert status == 200, body
  assert body['num_items'] == 66
  found = client.get('/search', q=text, k=3)[1]
  assert found['ids'][0] == 900001 and found['fast_scores'][0] == pytest.approx(1, abs=1e-3)
  # The added image is embedded by the image tower: it is a copy of image 3, so it scores
  # as image 3 does, and its thumbnail is served.
  scores = dict(zip(*(client.get('/search', q=text, k=66)[1][key]
                      for key in ('ids', 'fast_scores'))))
  assert scores[900002] == pytest.approx(scores[int(arrays['image_ids'][3])], abs=1e-3)
  assert client.request('GET', '/image?id=900002')[2] == image_png
  manifest = json.loads((workdir / 'index' / 'manifest.json').read_text())
  assert manifest['num_items'] == 66 and manifest['changes_since_build']['added'] == 2

  status, body = client.json('DELETE', '/items', {'ids': [900001, 900002]}, WRITER)
  assert status == 200 and body == {'deleted': 2, 'num_items': 64}
  found = client.get('/search', q=text, k=64)[1]
  assert not {900001, 900002} & set(found['ids'])
  assert client.get('/image', id='900002')[0] == 404
  assert client.json('DELETE', '/items', {'ids': [900001]}, WRITER)[0] == 400
  assert client.get('/healthz')[1]['num_items'] == 64


def test_concurrent_load(served):
  """16 clients x 20 requests on keep-alive connections: no errors, bounded in time."""
  client, _, arrays = served
  texts = [str(t) for t in arrays['texts'][:40]]
  clients, per_client, deadline = 16, 20, time.time() + 120

  def run(worker):
    session = Client(client.host, client.port)
    latencies = []
    for i in range(per_client):
      if time.time() > deadline:
        break
      start = time.perf_counter()
      status, body = session.get('/search', q=texts[(worker + i) % len(texts)], k=10)
      latencies.append(time.perf_counter() - start)
      assert status == 200 and len(body['ids']) == 10, body
    session.connection.close()
    return latencies

  start = time.perf_counter()
  with concurrent.futures.ThreadPoolExecutor(clients) as pool:
    latencies = sorted(sum(pool.map(run, range(clients)), []))
  seconds = time.perf_counter() - start
  assert len(latencies) == clients * per_client
  health = client.get('/healthz')[1]
  print(f'\nload test: {len(latencies)} requests from {clients} clients in {seconds:.2f}s '
        f'({len(latencies) / seconds:.0f} req/s), p50 {1000 * latencies[len(latencies) // 2]:.1f}'
        f' ms, p99 {1000 * latencies[int(len(latencies) * 0.99)]:.1f} ms, largest micro-batch '
        f'{health["largest_batch"]}')
  assert health['largest_batch'] >= 1


def _browser():
  """(chromium, chromedriver) paths, or a pytest skip saying what is missing."""
  try:
    import selenium  # pylint: disable=import-outside-toplevel,unused-import
  except ImportError:
    pytest.skip('selenium is not installed (pip install -r requirements.txt)')
  chromium = shutil.which('chromium') or shutil.which('chromium-browser')
  driver = shutil.which('chromedriver')
  if not chromium or not driver:
    pytest.skip('no headless browser: install Debian\'s chromium and chromium-driver '
                '(apt-get install -y chromium chromium-driver; .ci/run does)')
  return chromium, driver


def _chrome(tmp_path):
  """A headless Chromium driven by selenium."""
  # pylint: disable=import-outside-toplevel
  chromium, driver_path = _browser()
  from selenium import webdriver
  from selenium.webdriver.chrome.service import Service
  options = webdriver.ChromeOptions()
  options.binary_location = chromium
  for flag in ('--headless', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage',
               '--disable-background-networking', '--disable-component-update',
               '--disable-sync', '--no-first-run', f'--user-data-dir={tmp_path / "profile"}'):
    options.add_argument(flag)
  return webdriver.Chrome(options=options, service=Service(executable_path=driver_path))


def test_web_page_in_a_browser(served, tmp_path):
  # pylint: disable=import-outside-toplevel
  from selenium.common.exceptions import StaleElementReferenceException
  from selenium.webdriver.common.by import By
  from selenium.webdriver.support import expected_conditions
  from selenium.webdriver.support.ui import Select
  from selenium.webdriver.support.ui import WebDriverWait
  client, _, arrays = served
  browser = _chrome(tmp_path)
  try:
    browser.get(f'http://{client.host}:{client.port}/')
    # A new search replaces the result elements: one found just before is then stale.
    wait = WebDriverWait(browser, 30, ignored_exceptions=(StaleElementReferenceException,))
    wait.until(lambda b: 'images' in b.find_element(By.ID, 'about').text)
    text = str(arrays['texts'][7])
    k_box = browser.find_element(By.ID, 'k')
    k_box.clear()
    k_box.send_keys('4')
    browser.find_element(By.ID, 'query').send_keys(text + '\n')
    wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, 'img.hit-image')) == 4)
    images = browser.find_elements(By.CSS_SELECTOR, 'img.hit-image')
    wait.until(lambda b: all(b.execute_script(
        'return arguments[0].complete && arguments[0].naturalWidth > 0', img) for img in images))
    expected_ids, expected_scores = _exact_top_k(arrays, text, 4)
    assert [img.get_attribute('alt') for img in images] == [f'image {i}' for i in expected_ids]
    captions = [c.text for c in browser.find_elements(By.CSS_SELECTOR, 'figure.hit figcaption')]
    assert captions[0] == f'1. {expected_ids[0]} · {expected_scores[0]:.3f}'
    assert 'results in' in browser.find_element(By.ID, 'status').text
    # A bad query shows the server's message instead of results.
    query_box = browser.find_element(By.ID, 'query')
    query_box.clear()
    query_box.send_keys(LONG + '\n')
    wait.until(expected_conditions.text_to_be_present_in_element(
        (By.ID, 'error'), 'too long for the model'))
    # A dropped image is the query: a gallery image's own PNG finds it first.
    image_id = int(arrays['image_ids'][3])
    png = client.request('GET', f'/image?id={image_id}')[2]
    drop_script = """
        const bytes = Uint8Array.from(atob(arguments[0]), c => c.charCodeAt(0));
        const transfer = new DataTransfer();
        transfer.items.add(new File([bytes], 'query.png', {type: 'image/png'}));
        document.getElementById('drop').dispatchEvent(
            new DragEvent('drop', {dataTransfer: transfer, bubbles: true, cancelable: true}));
        """
    browser.execute_script(drop_script, base64.b64encode(png).decode())
    wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, 'img.hit-image')[0].get_attribute(
        'alt') == f'image {image_id}')
    assert browser.find_element(By.ID, 'error').text == ''
    # The same image finds captions too: each shown under the image it describes.
    Select(browser.find_element(By.ID, 'target')).select_by_value('texts')
    browser.execute_script(drop_script, base64.b64encode(png).decode())
    top = client.json('POST', '/search', {'image': base64.b64encode(png).decode(),
                                          'target': 'texts', 'k': 1})[1]['results'][0]
    wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, 'figure.hit figcaption')[0].text
               .startswith(f'1. {top["texts"][0]} · '))
    assert browser.find_elements(By.CSS_SELECTOR, 'img.hit-image')[0].get_attribute(
        'alt') == f'image {top["image_ids"][0]}'
    Select(browser.find_element(By.ID, 'target')).select_by_value('images')
    # A filter narrows the results; a malformed one shows the server's one-line refusal.
    filter_box = browser.find_element(By.ID, 'filter')
    filter_box.send_keys('{"objects": {"gte": 9}}')
    query_box.clear()
    query_box.send_keys(text + '\n')
    wait.until(expected_conditions.text_to_be_present_in_element((By.ID, 'status'),
                                                                 'filter matched 0'))
    filter_box.clear()
    filter_box.send_keys('{"nope": 1}')
    query_box.send_keys('\n')
    wait.until(expected_conditions.text_to_be_present_in_element(
        (By.ID, 'error'), "unknown filter field 'nope'"))
  finally:
    browser.quit()


def test_serve_refuses_a_damaged_index(served, tmp_path):
  _, workdir, _ = served
  copy = tmp_path / 'copy'
  shutil.copytree(workdir, copy, ignore=shutil.ignore_patterns('tensorboard', 'query'))
  np.save(copy / 'index' / 'ids.npy', np.arange(64))
  result = run_main('--mode=serve', f'--workdir={copy}', '--port=0', check=False)
  assert result.returncode != 0
  assert 'error: index in' in result.stderr and 'damaged' in result.stderr, result.stderr
  assert 'Traceback' not in result.stderr
  # An intact index whose checkpoint step has been rotated away.
  shutil.copy(workdir / 'index' / 'ids.npy', copy / 'index' / 'ids.npy')
  shutil.rmtree(copy / 'checkpoints' / '4')
  result = run_main('--mode=serve', f'--workdir={copy}', '--port=0', check=False)
  assert result.returncode != 0
  assert 'checkpoint step 4' in result.stderr and '--mode=export' in result.stderr, result.stderr
  assert 'Traceback' not in result.stderr


class _RowQueries:
  """A stand-in text encoder: the text `q<N>` is the vector `vectors[N]`."""

  def __init__(self, vectors):
    self.vectors = vectors

  def prepare(self, texts):
    for text in texts:
      encoder.check_text(text)
    return np.asarray([int(text[1:]) for text in texts])[:, None]

  def embed(self, prepared):
    return self.vectors[prepared[:, 0]]


class _ReverseReranker:
  """Scores candidates in reverse order of the fast ranking (so the order visibly changes)."""
  name = 'reverse'
  num_candidates = 6
  bucket_costs_ms = {2: 1.0, 4: 5.0, 6: 50.0}

  def __init__(self):
    self.calls = []

  def __call__(self, query, candidate_ids, fast_scores):
    self.calls.append((query, list(candidate_ids), np.asarray(fast_scores)))
    return -np.asarray(fast_scores) * 2


def _rerank_server(tmp_path):
  """(server, service, index, reranker, client): 50 random vectors, ids im0..im49, served
  in this process with the reverse re-ranker and no write token."""
  # pylint: disable=import-outside-toplevel
  import ml_collections
  from jaxret.index import store
  from jaxret.serve import server as server_lib
  from jaxret.serve import service as service_lib
  rng = np.random.default_rng(0)
  vectors = rng.normal(size=(50, 8)).astype(np.float32)
  vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
  config = ml_collections.ConfigDict(dict(
      method='auto', brute_force_below=10_000, num_leaves=0, num_leaves_to_search=0,
      reorder=0, dims_per_block=2, anisotropic_threshold=0.2))
  store.build(vectors, np.array([f'im{i}' for i in range(50)]), step=1, index_config=config,
              out_dir=str(tmp_path / 'index'))
  index = store.load(str(tmp_path / 'index'))
  reranker = _ReverseReranker()
  service = service_lib.SearchService(index, _RowQueries(vectors), model_step=1,
                                      reranker=reranker)
  server = server_lib.make_server(service, '127.0.0.1', 0)
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  return server, service, index, reranker, Client(*server.server_address[:2])


def test_rerank_hook_reorders_and_reports_slow_scores(tmp_path):
  server, service, index, reranker, client = _rerank_server(tmp_path)
  try:
    fast = client.get('/search', q='q3', k=3)[1]
    assert fast['ids'][0] == 'im3' and 'slow_scores' not in fast
    status, slow = client.get('/search', q='q3', k=3, rerank=1)
    assert status == 200, slow
    query, candidates, fast_scores = reranker.calls[-1]
    assert query == 'q3' and len(candidates) == 6 and candidates[0] == 'im3'
    # The slow order is the reverse of the fast one; the top 3 of the 6 candidates are kept.
    assert slow['ids'] == candidates[::-1][:3]
    np.testing.assert_allclose(slow['slow_scores'], -2 * fast_scores[::-1][:3], rtol=1e-6)
    np.testing.assert_allclose(slow['fast_scores'], fast_scores[::-1][:3], rtol=1e-6)
    assert 'rerank_ms' in slow['timings_ms']
    assert client.get('/healthz')[1]['reranker'] == 'reverse'
    batch = client.json('POST', '/search', {'queries': ['q1', 'q2'], 'k': 2, 'rerank': True})[1]
    assert all(len(r['slow_scores']) == 2 for r in batch['results'])
    # A latency budget picks the largest bucket whose measured cost fits: 4 candidates.
    status, budget = client.get('/search', q='q3', k=3, rerank=1, budget_ms=10)
    assert status == 200, budget
    assert budget['rerank_k'] == 4 and budget['rerank_budget_ms'] == 10
    assert len(reranker.calls[-1][1]) == 4 and budget['ids'] == reranker.calls[-1][1][::-1][:3]
    assert budget['fast_ids'] == reranker.calls[-1][1][:3]  # The fast order, side by side.
    assert budget['timings_ms']['rerank_ms'] >= 0
    status, body = client.json('POST', '/search', {'queries': ['q3'], 'rerank': True,
                                                   'budget_ms': 0.5})
    assert status == 400 and 'no re-ranking bucket fits a budget of 0.5 ms' in body['error']
    assert client.get('/search', q='q3', rerank=1, budget_ms=-1)[0] == 400
    # No write token configured: writes are refused, saying how to enable them.
    status, body = client.json('POST', '/items', {'items': [{'id': 'im99',
                                                            'embedding': [1.0] + [0.0] * 7}]},
                               {'Authorization': 'Bearer anything-at-all-123'})
    assert status == 403 and 'JAXRET_WRITE_TOKEN' in body['error'], body
    assert len(index) == 50
    # This service has no indexed captions: an image→text search says how to make them.
    status, body = client.json('POST', '/search', {'image_id': 'im3', 'target': 'texts'})
    assert status == 400 and 'texts are not indexed' in body['error'], body
    assert '--config.index.texts=True' in body['error']
    assert client.get('/healthz')[1]['texts'] is None
  finally:
    client.close()
    server.shutdown()
    server.server_close()
    service.close()


def test_benchmark_script_runs_on_a_small_gallery(tmp_path):
  out = tmp_path / 'serving.json'
  result = subprocess.run(
      [sys.executable, 'benchmarks/serving.py', '--only=synthetic', '--num=3000', '--dim=16',
       '--clusters=20', '--queries=64', '--batch=32', '--seconds=0.05', '--requests=16',
       '--clients=2', '--rounds=1', '--skip-faiss', '--old-server-commit=', f'--out={out}'],
      cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  section = json.loads(out.read_text())['synthetic']
  assert section['recall_at_10']['jaxret_index'] >= 0.95
  assert section['http_search']['one_client']['p50_ms'] > 0
  # The old http.server side by side needs git history; the test runs without it.
  assert section['http_search_before'] is None
  assert section['index']['build_params']['method'] == 'brute_force'


def test_overhead_benchmark_runs(tmp_path):
  out = tmp_path / 'overhead.json'
  result = subprocess.run(
      [sys.executable, 'benchmarks/serving_overhead.py', '--num=1000', '--dim=8', '--rounds=1',
       '--requests=5', '--large=1', '--old-server-commit=', f'--out={out}'],
      cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  figures = json.loads(out.read_text())['results']['after']
  assert {'asgi_post_search_us', 'asgi_get_search_us', 'asgi_post_search_256x1000_us',
          'loopback_post_search_us', 'loopback_get_search_cpu_us'} <= set(figures)
  assert all(figure['median'] > 0 for figure in figures.values())


def test_web_page_shows_the_fast_and_reranked_orders(tmp_path):
  # pylint: disable=import-outside-toplevel
  from selenium.webdriver.common.by import By
  from selenium.webdriver.support.ui import WebDriverWait
  server, service, _, reranker, client = _rerank_server(tmp_path)
  browser = _chrome(tmp_path)
  try:
    browser.get(f'http://{client.host}:{client.port}/')
    wait = WebDriverWait(browser, 30)
    wait.until(lambda b: b.find_element(By.ID, 'rerank-label').is_displayed())
    browser.find_element(By.ID, 'rerank').click()
    k_box = browser.find_element(By.ID, 'k')
    k_box.clear()
    k_box.send_keys('3')
    browser.find_element(By.ID, 'query').send_keys('q3\n')
    alts = lambda b, box: [img.get_attribute('alt') for img in b.find_elements(
        By.CSS_SELECTOR, f'#{box} img.hit-image')]
    wait.until(lambda b: len(alts(b, 'slow-results')) == 3)
    candidates = reranker.calls[-1][1]
    assert alts(browser, 'fast-results') == [f'image {i}' for i in candidates[:3]]
    assert alts(browser, 'slow-results') == [f'image {i}' for i in candidates[::-1][:3]]
    assert 're-rank K=6' in browser.find_element(By.ID, 'status').text
  finally:
    browser.quit()
    client.close()
    server.shutdown()
    server.server_close()
    service.close()


def test_write_token_sources_and_checks(tmp_path):
  # pylint: disable=import-outside-toplevel
  from jaxret.serve import auth
  token_file = tmp_path / 'token'
  token_file.write_text(TOKEN + '\n')
  assert auth.load_token(str(token_file), environ={}) == TOKEN
  # The flag's file wins over the environment; without either, writes are disabled.
  assert auth.load_token(str(token_file), environ={auth.ENV_VAR: 'y' * 20}) == TOKEN
  assert auth.load_token(None, environ={auth.ENV_VAR: 'y' * 20}) == 'y' * 20
  assert auth.load_token(None, environ={}) is None
  for bad, fragment in [('short', 'at least 16'), ('has a space in it ok', 'without spaces')]:
    token_file.write_text(bad)
    with pytest.raises(errors.UserError, match=fragment):
      auth.load_token(str(token_file), environ={})
  with pytest.raises(errors.UserError, match='cannot read the write token file'):
    auth.load_token(str(tmp_path / 'missing'), environ={})
  auth.check(TOKEN, f'Bearer {TOKEN}')
  auth.check(TOKEN, f'bearer  {TOKEN} ')
  for token, header, status in [(None, f'Bearer {TOKEN}', 403), (TOKEN, None, 401),
                                (TOKEN, 'Bearer', 401), (TOKEN, TOKEN, 401),
                                (TOKEN, f'Bearer {TOKEN[:-1]}', 403)]:
    with pytest.raises(auth.Refused) as refused:
      auth.check(token, header)
    assert refused.value.status == status


# A video gallery: animated thumbnails made by --mode=index, served by GET /image.

def _index_of_random_embeddings(config, workdir):
  """`--mode=index` (`build_index`) over random unit vectors standing in for the exported
  embeddings of `config`'s test split; returns (manifest, records, service, server, client)."""
  # pylint: disable=import-outside-toplevel
  from jaxret import models
  from jaxret.data import sources
  from jaxret.export import embeddings
  from jaxret.export import index as index_lib
  from jaxret.index import store
  from jaxret.serve import gallery as gallery_lib
  from jaxret.serve import server as server_lib
  from jaxret.serve import service as service_lib
  records = sources.load_split(config.data, 'test')
  config.index.texts = False  # The stand-in export's 4 captions are no gallery.
  vectors = np.random.default_rng(0).normal(size=(len(records), 8)).astype(np.float32)
  vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
  path = embeddings.path(workdir)
  (workdir / 'export').mkdir(parents=True)
  np.savez(path, image_ids=np.asarray(records.image_ids), image_emb=vectors,
           text_emb=vectors[:4], texts=np.asarray([f'q{i}' for i in range(4)]),
           text_image_ids=np.asarray(records.image_ids)[:4],
           step=np.asarray(1), split=np.asarray('test'))
  manifest = index_lib.build_index(config, str(workdir))
  model = models.build(config.model, vocab_size=10, text_len=config.data.text_len)
  service = service_lib.SearchService(
      store.load(store.directory(str(workdir))), _RowQueries(vectors), model_step=1,
      gallery=gallery_lib.for_workdir(config, str(workdir), 'test'),
      image_encoder=encoder.ImageEncoder(model, None, config.data))  # Never run: no params.
  server = server_lib.make_server(service, '127.0.0.1', 0)
  threading.Thread(target=server.serve_forever, daemon=True).start()
  return manifest, records, service, server, Client(*server.server_address[:2])


def _timeline(animation):
  """An animated image's frames, each repeated for its duration in thumbnail frame times."""
  # pylint: disable=import-outside-toplevel
  from jaxret.index import thumbnails
  frames = []
  for position in range(animation.n_frames):
    animation.seek(position)
    animation.load()
    frame = np.asarray(animation.convert('RGB'), np.float32)
    frames += [frame] * round(animation.info['duration'] / thumbnails.FRAME_MS)
  return frames


@pytest.mark.parametrize('config_name', ['video', 'demo'])
def test_gallery_pictures_animated_webp_for_clips_png_for_images(config_name, tmp_path):
  # pylint: disable=import-outside-toplevel
  from jaxret.index import thumbnails
  from jaxret.serve import gallery as gallery_lib
  from method_configs import load_config
  config = load_config(config_name, 'runlocal')
  manifest, records, service, server, client = _index_of_random_embeddings(config, tmp_path)
  try:
    row = 1  # A clip whose frames all differ from the same frames reversed.
    image_id = int(records.image_ids[row])
    status, headers, body = client.request('GET', f'/image?id={image_id}')
    assert status == 200
    if config_name == 'demo':  # An image gallery: PNG as before, no thumbnails made.
      assert 'thumbnails' not in manifest and not (tmp_path / 'thumbnails').exists()
      assert headers['Content-Type'] == 'image/png'
      np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(body))),
                                    records.images[row])
      return
    clip = np.asarray(records.images[row], np.float32)
    frames = len(clip)
    assert manifest['thumbnails']['num_items'] == len(records) == 32
    assert manifest['thumbnails']['frames_per_clip'] == frames == 8
    # What is served is what --mode=index made.
    stored = thumbnails.load(thumbnails.directory(str(tmp_path)))
    assert headers['Content-Type'] == 'image/webp' and body == stored.get(image_id)
    animation = Image.open(io.BytesIO(body))
    assert animation.is_animated and animation.size == (64, 64)
    timeline = _timeline(animation)
    assert len(timeline) == frames  # The clip's frame count, frame by frame (lossy WebP).
    errors_by_frame = [float(np.mean(np.abs(timeline[t] - clip[t]))) for t in range(frames)]
    assert max(errors_by_frame) < 8, errors_by_frame
    assert max(float(np.mean(np.abs(timeline[t] - clip[::-1][t]))) for t in range(frames)) > 16
    assert client.get('/image', id='12345')[0] == 404
    status, answer = client.json('POST', '/search', {'image': base64.b64encode(
        thumbnails.encode(clip[:1].astype(np.uint8))).decode()})
    assert status == 400 and 'an image is not a clip' in answer['error'], answer
    # An index made before thumbnails: the clip is encoded when asked for.
    shutil.rmtree(tmp_path / 'thumbnails')
    made, media_type = gallery_lib.for_workdir(config, str(tmp_path), 'test').picture(image_id)
    assert media_type == 'image/webp' and made == body
  finally:
    client.close()
    server.shutdown()
    server.server_close()
    service.close()


def test_damaged_thumbnails_are_refused(tmp_path):
  # pylint: disable=import-outside-toplevel
  from jaxret.index import thumbnails
  clips = np.zeros((2, 3, 16, 16, 3), np.uint8)
  clips[:, 1] = 255
  out_dir = str(tmp_path / 'thumbnails')
  manifest = thumbnails.save(out_dir, ['a', 7], clips, 'test')
  assert manifest['num_items'] == 2 and manifest['frames_per_clip'] == 3
  assert thumbnails.load(out_dir).get('7') is None  # Ids keep their type: 7 is not '7'.
  stored = thumbnails.load(out_dir).get(7)
  (tmp_path / 'thumbnails' / next(iter(manifest['checksums']))).write_bytes(b'not a webp')
  with pytest.raises(errors.UserError, match='animated thumbnails in .* are damaged'):
    thumbnails.load(out_dir)
  assert len(_timeline(Image.open(io.BytesIO(stored)))) == 3

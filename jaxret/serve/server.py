"""`--mode=serve`: the HTTP API and web page over a `SearchService`.

  GET  /                        the search page (thumbnails and scores)
  GET  /healthz                 status, model step, gallery size, batching counters
  GET  /search?q=TEXT&k=10&rerank=0
                                {"query", "k", "ids", "fast_scores", ["slow_scores"],
                                 "image_urls", "timings_ms", "model_step", "index_size"}
  POST /search                  {"queries": [TEXT, ...], "k": 10, "rerank": false}
                                -> {"results": [{"query", "ids", "fast_scores", ...}], ...}
  GET  /image?id=ID             a gallery image as PNG
  POST /items                   {"items": [{"id": ID, "embedding": [...]} or
                                           {"id": ID, "image": BASE64_PNG_OR_JPEG}]}
  DELETE /items                 {"ids": [ID, ...]}
  GET  /explain?q=TEXT&id=ID    per-word heatmaps over image ID, one per scorer
                                (`serve/explain.py`); 404 for an id not in the gallery

Bad input of any kind gets a 4xx with {"error": message}; the server goes on
serving. Changing the gallery (`/items`) is accepted only from loopback
clients: the server has no authentication of its own.
"""

import http.server
import ipaddress
import json
import signal
import socket
import threading
import urllib.parse

from absl import logging

from jaxret import errors
from jaxret.serve import page
from jaxret.serve import service as service_lib

MAX_SEARCH_BODY = 1 << 20
MAX_ITEMS_BODY = 32 << 20
SEARCH_PARAMS = ('q', 'k', 'rerank')
SEARCH_BODY_KEYS = ('queries', 'k', 'rerank')


class HttpError(Exception):
  """A 4xx with a message."""

  def __init__(self, status, message):
    super().__init__(message)
    self.status = status


def _flag(value, name):
  if value in (True, False, 0, 1) and not isinstance(value, float):
    return bool(value)
  if isinstance(value, str) and value.lower() in ('0', '1', 'true', 'false'):
    return value.lower() in ('1', 'true')
  raise HttpError(400, f'{name} must be 0 or 1 (or true/false), not {value!r}')


def _int(value, name):
  try:
    return int(value)
  except (TypeError, ValueError):
    raise HttpError(400, f'{name} must be an integer, not {value!r}') from None


def image_url(image_id):
  return '/image?' + urllib.parse.urlencode({'id': str(image_id)})


class Handler(http.server.BaseHTTPRequestHandler):
  """Routes requests to the server's `SearchService`; every failure becomes a JSON error."""

  protocol_version = 'HTTP/1.1'  # Keep-alive: clients reuse connections.
  server_version = 'jaxret'
  timeout = 30  # Seconds a client may idle mid-request before its connection is closed.
  # Headers and body are two writes: without TCP_NODELAY the body waits for the client's
  # delayed ACK (40 ms on Linux).
  disable_nagle_algorithm = True

  @property
  def service(self):
    return self.server.service

  def log_message(self, format, *args):  # pylint: disable=redefined-builtin
    logging.info('%s %s', self.address_string(), format % args)

  def do_GET(self):  # pylint: disable=invalid-name
    self._handle('GET')

  def do_POST(self):  # pylint: disable=invalid-name
    self._handle('POST')

  def do_DELETE(self):  # pylint: disable=invalid-name
    self._handle('DELETE')

  def do_HEAD(self):  # pylint: disable=invalid-name
    self._handle('GET')  # `_send` leaves out the body.

  def do_PUT(self):  # pylint: disable=invalid-name
    self._handle('PUT')

  def do_PATCH(self):  # pylint: disable=invalid-name
    self._handle('PATCH')

  def _handle(self, method):
    try:
      url = urllib.parse.urlsplit(self.path)
      routes = {
          '/': {'GET': self._page},
          '/healthz': {'GET': self._healthz},
          '/search': {'GET': self._search_get, 'POST': self._search_post},
          '/image': {'GET': self._image},
          '/items': {'POST': self._items_post, 'DELETE': self._items_delete},
          '/explain': {'GET': self._explain},
      }
      if url.path not in routes:
        self._discard_body()
        raise HttpError(404, f'no such path {url.path!r}; the API is GET /search, POST /search, '
                        'GET /healthz, GET /image, POST and DELETE /items')
      if method not in routes[url.path]:
        self._discard_body()
        raise HttpError(405, f'{method} is not allowed on {url.path}; use '
                        f'{" or ".join(routes[url.path])}')
      status, content_type, body = routes[url.path][method](url)
    except HttpError as e:
      status, content_type, body = e.status, 'application/json', _json({'error': str(e)})
    except errors.UserError as e:
      status, content_type, body = 400, 'application/json', _json({'error': str(e)})
    except Exception as e:  # pylint: disable=broad-except
      logging.exception('internal error on %s %s', method, self.path)
      status, content_type, body = 500, 'application/json', _json(
          {'error': f'internal error ({type(e).__name__}); the server goes on serving'})
    self._send(status, content_type, body)

  def _send(self, status, content_type, body, extra_headers=()):
    self.send_response(status)
    self.send_header('Content-Type', content_type)
    self.send_header('Content-Length', str(len(body)))
    self.send_header('X-Content-Type-Options', 'nosniff')
    for name, value in extra_headers:
      self.send_header(name, value)
    if self.close_connection:
      self.send_header('Connection', 'close')
    self.end_headers()
    if self.command != 'HEAD':
      self.wfile.write(body)

  def _content_length(self):
    length = self.headers.get('Content-Length')
    if length is None:
      return None
    try:
      length = int(length)
      if length < 0:
        raise ValueError
    except ValueError:
      self.close_connection = True
      raise HttpError(400, f'bad Content-Length {length!r}') from None
    return length

  def _discard_body(self):
    length = self._content_length()
    if length:
      if length > MAX_ITEMS_BODY:
        self.close_connection = True
      else:
        self.rfile.read(length)

  def _read_json(self, limit):
    """The request body as a JSON object."""
    length = self._content_length()
    if length is None:
      self.close_connection = True
      raise HttpError(411, 'a JSON body with a Content-Length header is required')
    if length > limit:
      self.close_connection = True  # The body is not read: the connection cannot be reused.
      raise HttpError(413, f'body of {length} bytes is over the limit of {limit}')
    raw = self.rfile.read(length)
    try:
      body = json.loads(raw.decode('utf-8'))
    except UnicodeDecodeError:
      raise HttpError(400, 'body is not valid UTF-8') from None
    except ValueError as e:
      raise HttpError(400, f'malformed JSON body: {e}') from None
    if not isinstance(body, dict):
      raise HttpError(400, 'the JSON body must be an object')
    return body

  def _query_params(self, url, known):
    try:
      pairs = urllib.parse.parse_qsl(url.query, keep_blank_values=True, encoding='utf-8',
                                     errors='strict')
    except UnicodeDecodeError:
      raise HttpError(400, 'query string is not valid UTF-8') from None
    params = dict(pairs)
    unknown = sorted(set(params) - set(known))
    if unknown:
      raise HttpError(400, f'unknown parameters {unknown}; known: {list(known)}')
    return params

  # Routes: each returns (status, content type, body bytes).

  def _page(self, url):
    del url
    return 200, 'text/html; charset=utf-8', page.PAGE.encode('utf-8')

  def _healthz(self, url):
    del url
    return 200, 'application/json', _json(self.service.health())

  def _with_urls(self, result):
    result['image_urls'] = [image_url(image_id) for image_id in result['ids']]
    return result

  def _search_get(self, url):
    params = self._query_params(url, SEARCH_PARAMS)
    if 'q' not in params:
      raise HttpError(400, 'missing parameter q (the query text), e.g. /search?q=a+red+circle')
    k = _int(params.get('k', self.service.options.default_k), 'k')
    if 'k' not in params:
      k = min(k, len(self.service.index))
    found = self.service.search([params['q']], k, _flag(params.get('rerank', '0'), 'rerank'))
    result = self._with_urls(found.pop('results')[0])
    return 200, 'application/json', _json({**result, **found})

  def _search_post(self, url):
    self._query_params(url, ())
    body = self._read_json(MAX_SEARCH_BODY)
    unknown = sorted(set(body) - set(SEARCH_BODY_KEYS))
    if unknown:
      raise HttpError(400, f'unknown keys {unknown}; known: {list(SEARCH_BODY_KEYS)}')
    if 'queries' not in body:
      raise HttpError(400, 'missing "queries": a list of query texts')
    k = body.get('k', min(self.service.options.default_k, len(self.service.index)))
    found = self.service.search(body['queries'], k, _flag(body.get('rerank', False), 'rerank'))
    found['results'] = [self._with_urls(result) for result in found['results']]
    return 200, 'application/json', _json(found)

  def _image(self, url):
    params = self._query_params(url, ('id',))
    if 'id' not in params:
      raise HttpError(400, 'missing parameter id')
    image_id = self.service.index.parse_id(params['id'])
    png = None
    if image_id in self.service.index and self.service.gallery is not None:
      png = self.service.gallery.png(image_id)
    if png is None:
      raise HttpError(404, f'no image for id {params["id"]!r}')
    return 200, 'image/png', png

  def _explain(self, url):
    params = self._query_params(url, ('q', 'id'))
    if 'q' not in params or 'id' not in params:
      raise HttpError(400, 'missing parameter q or id, e.g. /explain?q=a+red+circle&id=7')
    image_id = self.service.index.parse_id(params['id'])
    if image_id not in self.service.index:
      raise HttpError(404, f'image id {params["id"]!r} is not in the gallery')
    return 200, 'application/json', _json(self.service.explain(params['q'], image_id))

  def _check_writer(self):
    if not ipaddress.ip_address(self.client_address[0]).is_loopback:
      raise HttpError(403, 'the gallery can be changed only from this machine (loopback)')

  def _items_post(self, url):
    self._query_params(url, ())
    body = self._read_json(MAX_ITEMS_BODY)
    self._check_writer()
    if set(body) != {'items'}:
      raise HttpError(400, 'the body must be {"items": [...]}')
    return 200, 'application/json', _json(self.service.add_items(body['items']))

  def _items_delete(self, url):
    self._query_params(url, ())
    body = self._read_json(MAX_SEARCH_BODY)
    self._check_writer()
    if set(body) != {'ids'}:
      raise HttpError(400, 'the body must be {"ids": [...]}')
    return 200, 'application/json', _json(self.service.delete_items(body['ids']))


def _json(value):
  return json.dumps(value, allow_nan=False).encode('utf-8')


class Server(http.server.ThreadingHTTPServer):
  """One thread per connection; the service micro-batches across them."""

  daemon_threads = True
  allow_reuse_address = True
  request_queue_size = 128  # socketserver's 5 drops bursts of new connections (1 s SYN retry).

  def __init__(self, address, service):
    family = socket.AF_INET6 if ':' in address[0] else socket.AF_INET
    self.address_family = family
    self.service = service
    super().__init__(address, Handler)

  def handle_error(self, request, client_address):
    # A client that hangs up mid-response is not the server's failure.
    logging.info('connection from %s ended with an error', client_address, exc_info=True)

  @property
  def url(self):
    host, port = self.server_address[:2]
    return f'http://{f"[{host}]" if ":" in host else host}:{port}/'


def make_server(service, host='127.0.0.1', port=0):
  """A server bound to `host:port` (port 0: a free one; see `.url`), not yet serving."""
  try:
    return Server((host, port), service)
  except OSError as e:
    raise errors.UserError(f'cannot listen on {host}:{port} ({e.strerror}); pick another '
                           '--port or --host') from None


def _interrupt(signum, frame):
  del signum, frame
  raise KeyboardInterrupt


def serve(config, workdir, host='127.0.0.1', port=8000, options=service_lib.Options()):
  """Loads the workdir's model and index, warms up, and serves until interrupted."""
  service = service_lib.from_workdir(config, workdir, options)
  server = make_server(service, host, port)
  if threading.current_thread() is threading.main_thread():
    signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM stops the server as Ctrl-C does.
  health = service.health()
  print(f'serving {health["num_items"]} images (model step {health["model_step"]}, '
        f'{health["index_method"]} index, warm-up {health["warmup_s"]:.1f}s) on {server.url}',
        flush=True)
  try:
    server.serve_forever()
  except KeyboardInterrupt:
    pass
  finally:
    server.server_close()
    service.close()

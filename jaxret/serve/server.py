"""`--mode=serve`: the HTTP API and web page over a `SearchService`, on FastAPI and uvicorn.

  GET  /                        the search page (thumbnails and scores)
  GET  /healthz                 status, model step, gallery size, batching counters
  GET  /search?q=TEXT&k=10&rerank=0&budget_ms=
                                {"query", "k", "ids", "fast_scores", ["slow_scores"],
                                 "image_urls", "timings_ms", "model_step", "index_size"}
  POST /search                  {"queries": [TEXT, ...] or "image": BASE64 or "image_id": ID,
                                 "k": 10, "rerank": false, "budget_ms": null, "filter": {...},
                                 "target": "images" or "texts" (an image query's captions)}
                                -> {"results": [{"query", "ids", "fast_scores", ...}], ...}
  GET  /image?id=ID             a gallery image as PNG (a clip: an animated WebP)
  POST /items                   {"items": [{"id": ID, "embedding": [...] or "image": BASE64,
                                            "metadata": {...}}]}       (write token)
  DELETE /items                 {"ids": [ID, ...]}                        (write token)
  GET  /explain?q=TEXT&id=ID    per-word heatmaps over image ID, one per scorer
                                (`serve/explain.py`); 404 for an id not in the gallery
  GET  /openapi.json, /docs     the schema (`jaxret/serve/schemas.py`)

Bad input of any kind gets a 4xx with {"error": message} on one line; the
server goes on serving. Writes need `Authorization: Bearer <token>`
(`jaxret/serve/auth.py`). Bodies are parsed here rather than by FastAPI so
that every refusal names its cause (not valid UTF-8, malformed JSON, not an
object) and an oversized body is refused from its Content-Length before it is
read. Handlers that block run in Starlette's thread
pool, and concurrent requests meet in the service's micro-batcher. A plain
text search (no re-ranking, filter or image, the common case) is queued from
the event loop and awaited there, without a thread of its own. The search
routes are plain Starlette routes (no per-request dependency solving), and
answers are serialised by orjson (docs/benchmarks.md measures the path).
"""

import asyncio
import json
import signal
import socket
import threading
import urllib.parse

import fastapi
import orjson
from fastapi import concurrency
from fastapi import exceptions as fastapi_exceptions
from fastapi import responses
from starlette import routing
from fastapi.openapi import utils as openapi_utils
import pydantic
from starlette import exceptions as starlette_exceptions
import uvicorn
from absl import logging

from jaxret import errors
from jaxret.serve import auth
from jaxret.serve import page
from jaxret.serve import schemas
from jaxret.serve import service as service_lib

MAX_SEARCH_BODY = 1 << 20
MAX_ITEMS_BODY = 32 << 20
SEARCH_PARAMS = ('q', 'k', 'rerank', 'budget_ms')
BODY_LIMITS = {('POST', '/search'): MAX_SEARCH_BODY, ('POST', '/items'): MAX_ITEMS_BODY,
               ('DELETE', '/items'): MAX_SEARCH_BODY}
ROUTES = ('GET /search, POST /search, GET /healthz, GET /image, GET /explain, POST and DELETE '
          '/items')
KEEP_ALIVE_S = 30  # Seconds a client may idle between requests on one connection.


class HttpError(Exception):
  """A 4xx with a message."""

  def __init__(self, status, message, headers=None):
    super().__init__(message)
    self.status = status
    self.headers = headers


def _json(value):
  # orjson: large answers (256 queries x k=1000) serialise many times faster than with json.
  return orjson.dumps(value)


def _response(status, value, headers=None):
  return responses.Response(_json(value), status, headers, media_type='application/json')


def _error(status, message, headers=None):
  return _response(status, {'error': ' '.join(str(message).split())}, headers)


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


def _float(value, name):
  try:
    return float(value)
  except (TypeError, ValueError):
    raise HttpError(400, f'{name} must be a number, not {value!r}') from None


def _parameter(name, kind, required, description):
  return {'name': name, 'in': 'query', 'required': required, 'description': description,
          'schema': {'type': kind}}


def _json_content(description, model):
  """An OpenAPI response of JSON in the shape of `model`."""
  return {'description': description, 'content': {'application/json': {
      'schema': {'$ref': f'#/components/schemas/{model.__name__}'}}}}


def image_url(image_id):
  if isinstance(image_id, int):  # The common case, without urlencode's cost.
    return f'/image?id={image_id}'
  return '/image?id=' + urllib.parse.quote_plus(image_id)


def _query_params(request, known):
  try:
    pairs = urllib.parse.parse_qsl(request.scope['query_string'].decode('latin-1'),
                                   keep_blank_values=True, encoding='utf-8', errors='strict')
  except UnicodeDecodeError:
    raise HttpError(400, 'query string is not valid UTF-8') from None
  params = dict(pairs)
  unknown = sorted(set(params) - set(known))
  if unknown:
    raise HttpError(400, f'unknown parameters {unknown}; known: {list(known)}')
  return params


def _parse(raw, model):
  """The request body as a validated `model`, and the JSON object it came from."""
  try:
    body = json.loads(raw.decode('utf-8'))
  except UnicodeDecodeError:
    raise HttpError(400, 'body is not valid UTF-8') from None
  except ValueError as e:
    raise HttpError(400, f'malformed JSON body: {e}') from None
  if not isinstance(body, dict):
    raise HttpError(400, 'the JSON body must be an object')
  try:
    return model.model_validate(body), body
  except pydantic.ValidationError as e:
    raise HttpError(400, schemas.one_line(e, body, model)) from None


class BodyLimits:
  """ASGI middleware: a body-carrying route needs a Content-Length within its limit, checked
  before the body is read (a 413 closes the connection: its body is never read)."""

  def __init__(self, app):
    self.app = app

  async def __call__(self, scope, receive, send):
    limit = scope['type'] == 'http' and BODY_LIMITS.get((scope['method'], scope['path']))
    if limit:
      headers = dict(scope['headers'])
      length = headers.get(b'content-length')
      refusal = None
      if length is None:
        refusal = _error(411, 'a JSON body with a Content-Length header is required',
                         {'Connection': 'close'})
      elif int(length) > limit:
        refusal = _error(413, f'body of {int(length)} bytes is over the limit of {limit}',
                         {'Connection': 'close'})
      if refusal is not None:
        await refusal(scope, receive, send)
        return
    await self.app(scope, receive, send)


def make_app(service, write_token=None):
  """The FastAPI application over `service`; writes need `write_token` (None: disabled)."""
  app = fastapi.FastAPI(title='jaxret search', version='1', docs_url='/docs', redoc_url=None,
                        description=__doc__.split('\n\n')[0])
  request_models = {}

  def body_of(path, method, model):
    request_models[(path, method)] = model
    return {'responses': {200: {}, 400: {'model': schemas.Error}}}

  @app.exception_handler(HttpError)
  async def _http_error(request, error):
    del request
    return _error(error.status, error, error.headers)

  @app.exception_handler(errors.UserError)
  async def _user_error(request, error):
    del request
    return _error(400, error)

  @app.exception_handler(auth.Refused)
  async def _refused(request, error):
    del request
    headers = {'WWW-Authenticate': 'Bearer'} if error.status == 401 else None
    return _error(error.status, error, headers)

  @app.exception_handler(starlette_exceptions.HTTPException)
  async def _routing_error(request, error):
    if error.status_code == 404:
      return _error(404, f'no such path {request.url.path!r}; the API is {ROUTES}')
    if error.status_code == 405:
      allowed = sorted({method for route in app.routes if isinstance(route, routing.Route)
                        and route.path == request.url.path for method in route.methods})
      return _error(405, f'{request.method} is not allowed on {request.url.path}; use '
                    f'{" or ".join(allowed)}')
    return _error(error.status_code, error.detail)

  @app.exception_handler(fastapi_exceptions.RequestValidationError)
  async def _validation_error(request, error):
    del request
    first = error.errors()[0]
    return _error(400, f'bad request: {"/".join(map(str, first["loc"]))}: {first["msg"]}')

  @app.exception_handler(Exception)
  async def _internal_error(request, error):
    logging.exception('internal error on %s %s', request.method, request.url.path)
    return _error(500, f'internal error ({type(error).__name__}); the server goes on serving')

  async def run_search(texts, k, rerank, filter_expression=None, budget_ms=None, image=None,
                       image_id=None, target='images'):
    """`service.search`: a plain text search awaited on the event loop; one that blocks
    (re-ranking, a filter's mask, embedding an image) in the thread pool. A FILIP
    workdir's token-wise re-order of a plain search (in `finish`) runs in the thread pool
    once the shortlist has been awaited."""
    if (rerank or filter_expression is not None or image is not None or image_id is not None
        or target != 'images'):
      return await concurrency.run_in_threadpool(service.search, texts, k, rerank,
                                                 filter_expression, budget_ms, image, image_id,
                                                 target)
    pending = service.begin_search(texts, k, budget_ms=budget_ms)
    result = await asyncio.wait_for(asyncio.wrap_future(pending.future),
                                    service_lib.REQUEST_TIMEOUT_S)
    if service.tokenwise is not None:
      return await concurrency.run_in_threadpool(pending.finish, result)
    return pending.finish(result)

  def with_urls(result):
    """The hits' image URLs (of the images that captions describe, for a search of texts)."""
    image_ids = result['image_ids'] if 'image_ids' in result else result['ids']
    result['image_urls'] = [image_url(image_id) for image_id in image_ids]
    return result

  @app.get('/', response_class=responses.HTMLResponse, include_in_schema=False)
  async def index_page():
    return responses.HTMLResponse(page.PAGE)

  @app.get('/healthz', response_model=schemas.Health)
  async def healthz():
    return _response(200, {**service.health(), 'writes_enabled': write_token is not None})

  # The search routes, the hot path, are Starlette routes: FastAPI's dependency solving
  # parses the query string and cookies again on every request (docs/benchmarks.md).
  # `openapi` describes them from the same models.
  search_operations = {
      'get': ('One text query', schemas.SingleSearchResponse, [
          _parameter('q', 'string', True, 'the query text'),
          _parameter('k', 'integer', False, 'results (default 10)'),
          _parameter('rerank', 'boolean', False, 're-rank with the slow model'),
          _parameter('budget_ms', 'number', False, 're-ranking latency budget')]),
      'post': ('Texts, or one image query (base64 or a gallery id), against images or '
               'indexed captions', schemas.SearchResponse, []),
  }
  request_models[('/search', 'post')] = schemas.SearchRequest

  async def search_get(request):
    """One text query."""
    params = _query_params(request, SEARCH_PARAMS)
    if 'q' not in params:
      raise HttpError(400, 'missing parameter q (the query text), e.g. /search?q=a+red+circle')
    k = _int(params.get('k', service.options.default_k), 'k')
    if 'k' not in params:
      k = min(k, len(service.index))
    budget = _float(params['budget_ms'], 'budget_ms') if params.get('budget_ms') else None
    found = await run_search([params['q']], k, _flag(params.get('rerank', '0'), 'rerank'),
                             budget_ms=budget)
    result = with_urls(found.pop('results')[0])
    return _response(200, {**result, **found})

  async def search_post(request):
    _query_params(request, ())
    body, raw = _parse(await request.body(), schemas.SearchRequest)
    if body.queries is None and body.image is None and body.image_id is None:
      raise HttpError(400, 'missing "queries": a list of query texts (or an "image" or '
                      '"image_id" to search with)')
    k = body.k if body.k is not None else min(service.options.default_k,
                                              service.gallery_size(body.target))
    found = await run_search(body.queries, k, body.rerank, raw.get('filter'), body.budget_ms,
                             body.image, body.image_id, body.target)
    found['results'] = [with_urls(result) for result in found['results']]
    return _response(200, found)

  app.router.add_route('/search', search_get, methods=['GET'])
  app.router.add_route('/search', search_post, methods=['POST'])

  @app.get('/image', response_class=responses.Response,
           responses={200: {'content': {'image/png': {}, 'image/webp': {}}}},
           openapi_extra={'parameters': [_parameter('id', 'string', True, 'a gallery id')]})
  def image(request: fastapi.Request):
    """A gallery image as PNG; a clip of a video gallery as an animated WebP."""
    params = _query_params(request, ('id',))
    if 'id' not in params:
      raise HttpError(400, 'missing parameter id')
    image_id = service.index.parse_id(params['id'])
    picture = None
    if image_id in service.index and service.gallery is not None:
      picture = service.gallery.picture(image_id)
    if picture is None:
      raise HttpError(404, f'no image for id {params["id"]!r}')
    data, media_type = picture
    return responses.Response(data, media_type=media_type)

  @app.get('/explain', responses={400: {'model': schemas.Error}, 404: {'model': schemas.Error}},
           openapi_extra={'parameters': [
               _parameter('q', 'string', True, 'the query text'),
               _parameter('id', 'string', True, 'a gallery id')]})
  def explain(request: fastapi.Request):
    """Per-word heatmaps of `q` over gallery image `id`, one per scorer."""
    params = _query_params(request, ('q', 'id'))
    if 'q' not in params or 'id' not in params:
      raise HttpError(400, 'missing parameter q or id, e.g. /explain?q=a+red+circle&id=7')
    image_id = service.index.parse_id(params['id'])
    if image_id not in service.index:
      raise HttpError(404, f'image id {params["id"]!r} is not in the gallery')
    return _response(200, service.explain(params['q'], image_id))

  async def _write_body(request, model):
    """The checked body of a request that changes the gallery (it needs the write token)."""
    auth.check(write_token, request.headers.get('authorization'))
    _query_params(request, ())
    body, _ = _parse(await request.body(), model)
    return body

  @app.post('/items', response_model=schemas.ItemsResponse,
            **body_of('/items', 'post', schemas.ItemsRequest))
  async def items_post(request: fastapi.Request):
    body = await _write_body(request, schemas.ItemsRequest)
    return _response(200, await concurrency.run_in_threadpool(service.add_items, body.items))

  @app.delete('/items', response_model=schemas.DeleteResponse,
              **body_of('/items', 'delete', schemas.DeleteRequest))
  async def items_delete(request: fastapi.Request):
    body = await _write_body(request, schemas.DeleteRequest)
    return _response(200, await concurrency.run_in_threadpool(service.delete_items, body.ids))

  def openapi():
    """FastAPI's schema, with the request bodies this module parses itself and the search
    routes."""
    if app.openapi_schema is None:
      schema = openapi_utils.get_openapi(title=app.title, version=app.version,
                                         description=app.description, routes=app.routes)
      components = schema.setdefault('components', {}).setdefault('schemas', {})
      for method, (summary, response, parameters) in search_operations.items():
        schema['paths'].setdefault('/search', {})[method] = {
            'summary': summary, 'operationId': f'search_{method}', 'parameters': parameters,
            'responses': {'200': _json_content('Successful Response', response),
                          '400': _json_content('Bad input, one line', schemas.Error)}}
      response_models = [operation[1] for operation in search_operations.values()]
      for model in (*request_models.values(), schemas.Item, *response_models, schemas.Error):
        found = model.model_json_schema(ref_template='#/components/schemas/{model}')
        components.update(found.pop('$defs', {}))
        components[model.__name__] = found
      # Items are validated by the service (one-line errors); the schema shows their shape.
      components['ItemsRequest']['properties']['items']['items'] = {
          '$ref': '#/components/schemas/Item'}
      for (path, method), model in request_models.items():
        schema['paths'][path][method]['requestBody'] = {'required': True, 'content': {
            'application/json': {'schema': {'$ref': f'#/components/schemas/{model.__name__}'}}}}
      app.openapi_schema = schema
    return app.openapi_schema

  app.openapi = openapi
  app.add_middleware(BodyLimits)
  return app


class Server:
  """uvicorn serving the app on a socket bound at construction (so `url` is known at once)."""

  def __init__(self, address, service, write_token=None):
    family = socket.AF_INET6 if ':' in address[0] else socket.AF_INET
    self.socket = socket.socket(family, socket.SOCK_STREAM)
    self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
      self.socket.bind(address)
    except OSError:
      self.socket.close()
      raise
    self.socket.listen(128)  # A burst of new connections is queued, not dropped.
    self.server_address = self.socket.getsockname()
    self.service = service
    config = uvicorn.Config(make_app(service, write_token), log_config=None,
                            log_level='warning', access_log=False, lifespan='off',
                            timeout_keep_alive=KEEP_ALIVE_S, server_header=False)
    self.uvicorn = uvicorn.Server(config)
    self._stopped = threading.Event()

  def serve_forever(self):
    try:
      self.uvicorn.run(sockets=[self.socket])
    finally:
      self._stopped.set()

  def shutdown(self):
    self.uvicorn.should_exit = True
    self._stopped.wait(30)

  def server_close(self):
    self.socket.close()

  @property
  def url(self):
    host, port = self.server_address[:2]
    return f'http://{f"[{host}]" if ":" in host else host}:{port}/'


def make_server(service, host='127.0.0.1', port=0, write_token=None):
  """A server bound to `host:port` (port 0: a free one; see `.url`), not yet serving."""
  try:
    return Server((host, port), service, write_token)
  except OSError as e:
    raise errors.UserError(f'cannot listen on {host}:{port} ({e.strerror}); pick another '
                           '--port or --host') from None


def _interrupt(signum, frame):
  del signum, frame
  raise KeyboardInterrupt


def serve(config, workdir, host='127.0.0.1', port=8000, options=service_lib.Options(),
          write_token_file=None):
  """Loads the workdir's model and index, warms up, and serves until interrupted."""
  write_token = auth.load_token(write_token_file)
  service = service_lib.from_workdir(config, workdir, options)
  server = make_server(service, host, port, write_token)
  if threading.current_thread() is threading.main_thread():
    # SIGTERM stops the server as Ctrl-C does (uvicorn re-raises it after its shutdown).
    signal.signal(signal.SIGTERM, _interrupt)
  health = service.health()
  writes = 'writes with the token' if write_token else f'writes disabled (no {auth.ENV_VAR})'
  print(f'serving {health["num_items"]} images (model step {health["model_step"]}, '
        f'{health["index_method"]} index, warm-up {health["warmup_s"]:.1f}s, {writes}) on '
        f'{server.url}', flush=True)
  try:
    server.serve_forever()
  except KeyboardInterrupt:
    pass
  finally:
    server.server_close()
    service.close()

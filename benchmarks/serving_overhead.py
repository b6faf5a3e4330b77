r"""The HTTP layer's own cost per search request, in process, before and after a change.

  nice -n 15 python benchmarks/serving_overhead.py --before=d617022 \
      --out=benchmarks/results/serving_overhead.json

A small brute-force gallery (--num x --dim unit vectors) behind a stand-in text
encoder (the text `q<N>` is query vector N), so that what is measured is the
server's path around a search: routing, validation, the micro-batcher's hand-off,
answer building and JSON. Two measurements, one request at a time, each as the
median wall-clock latency (`..._us`) and as the process's CPU time per request,
all threads (`..._cpu_us`: less swayed by other jobs on a shared machine):

  asgi: the FastAPI app called directly with an ASGI scope (no socket, no HTTP
    parsing), `POST /search` and `GET /search`; the median time per request;
    and --large requests of the largest answer, 256 queries with k = 1000.
  loopback: uvicorn on a loopback port and one keep-alive `http.client`
    connection in the same process; the median latency of `GET /search` and
    `POST /search`; with --old-server-commit, the same for the hand-written
    `http.server` that FastAPI replaced (its `server.py` from git history, serving
    this checkout's service), in the same worker.

Each --rounds round runs one worker process per code version (this checkout,
and `--before`, a commit whose `jaxret/` is taken from git history into a
temporary folder), alternating them (and the order every other round; so too
the two servers within a worker), so both see the same machine load; a
figure is the median over the rounds, with every round's value kept, and
`after_over_before` the median over rounds of each round's ratio.
`--profile` prints cProfile's top functions of `POST /search` instead.
"""

import argparse
import asyncio
import cProfile
import http.client
import importlib.util
import io
import json
import os
import platform
import pstats
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
K = 10


class RowQueries:
  """A stand-in text encoder: the text `q<N>` is the vector `vectors[N]`."""

  def __init__(self, vectors):
    self.vectors = vectors

  def prepare(self, texts):
    return np.asarray([int(text[1:]) for text in texts], np.int64)[:, None]

  def embed(self, prepared):
    return self.vectors[prepared[:, 0]]


def _service(num, dim, folder):
  """A SearchService over `num` random unit vectors, with its own vectors as queries."""
  # The jaxret under test is chosen at run time (this checkout or --before's).
  # pylint: disable=import-outside-toplevel
  import ml_collections
  from jaxret.index import store
  from jaxret.serve import service as service_lib
  vectors = np.random.default_rng(0).normal(size=(num, dim)).astype(np.float32)
  vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
  config = ml_collections.ConfigDict(dict(
      method='brute_force', brute_force_below=0, num_leaves=0, num_leaves_to_search=0,
      reorder=0, dims_per_block=2, anisotropic_threshold=0.2))
  store.build(vectors, np.arange(num), step=0, index_config=config,
              out_dir=os.path.join(folder, 'index'))
  index = store.load(os.path.join(folder, 'index'))
  return service_lib.SearchService(index, RowQueries(vectors), model_step=0)


def _scope(method, path, query, body):
  return {'type': 'http', 'asgi': {'version': '3.0'}, 'http_version': '1.1',
          'method': method, 'scheme': 'http', 'path': path, 'raw_path': path.encode(),
          'query_string': query, 'root_path': '', 'client': ('127.0.0.1', 1),
          'server': ('127.0.0.1', 80),
          'headers': [(b'host', b'127.0.0.1'), (b'content-type', b'application/json'),
                      (b'content-length', str(len(body)).encode())]}


async def _asgi_call(app, method, path, query, body):
  """One request through the ASGI app; returns the status."""
  messages = [{'type': 'http.request', 'body': body, 'more_body': False}]
  status = []

  async def receive():
    return messages.pop() if messages else {'type': 'http.disconnect'}

  async def send(message):
    if message['type'] == 'http.response.start':
      status.append(message['status'])

  await app(_scope(method, path, query, body), receive, send)
  return status[0]


def _requests(count):
  """(method, path, query string, body) of `count` POST and `count` GET searches."""
  post = [('POST', '/search', b'', json.dumps({'queries': [f'q{i}'], 'k': K}).encode())
          for i in range(count)]
  get = [('GET', '/search', f'q=q{i}&k={K}'.encode(), b'') for i in range(count)]
  return {'post_search': post, 'get_search': get}


async def _asgi_times(app, requests):
  times = []
  for request in requests:
    start = time.perf_counter()
    status = await _asgi_call(app, *request)
    times.append(time.perf_counter() - start)
    if status != 200:
      raise RuntimeError(f'{request[:2]} answered {status}')
  return times


def _loopback_times(url_host, port, requests):
  connection = http.client.HTTPConnection(url_host, port, timeout=60)
  times = []
  for method, path, query, body in requests:
    target = path + ('?' + query.decode() if query else '')
    start = time.perf_counter()
    connection.request(method, target, body=body or None,
                       headers={'Content-Type': 'application/json'} if body else {})
    response = connection.getresponse()
    response.read()
    times.append(time.perf_counter() - start)
    if response.status != 200:
      raise RuntimeError(f'{method} {target} answered {response.status}')
  connection.close()
  return times


def _old_server(commit, folder):
  """The `jaxret/serve/server.py` of `commit` as a module."""
  source = subprocess.run(['git', 'show', f'{commit}:jaxret/serve/server.py'], cwd=REPO,
                          check=True, capture_output=True, text=True).stdout
  path = os.path.join(folder, 'old_server.py')
  with open(path, 'w') as f:
    f.write(source)
  spec = importlib.util.spec_from_file_location('old_server', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _loopback(make_server, service, requests, prefix):
  """{prefix + request name + '_us': median loopback latency} for a server's `make_server`."""
  server = make_server(service, '127.0.0.1', 0)
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  found = {}
  try:
    host, port = server.server_address[:2]
    for _ in range(100):  # uvicorn starts in its thread.
      try:
        _loopback_times(host, port, requests['get_search'][:20])
        break
      except ConnectionError:
        time.sleep(0.05)
    for name, batch in requests.items():
      cpu = time.process_time()
      times = _loopback_times(host, port, batch)
      found[f'{prefix}{name}_cpu_us'] = 1e6 * (time.process_time() - cpu) / len(batch)
      found[f'{prefix}{name}_us'] = 1e6 * float(np.median(times))
  finally:
    server.shutdown()
    server.server_close()
  return found


def worker(args):
  """Measures this process's jaxret; prints one JSON line of medians in microseconds."""
  from jaxret.serve import server as server_lib  # pylint: disable=import-outside-toplevel
  with tempfile.TemporaryDirectory() as folder:
    service = _service(args.num, args.dim, folder)
    try:
      app = server_lib.make_app(service)
      requests = _requests(args.requests)
      loop = asyncio.new_event_loop()
      for name in requests:  # Warm.
        loop.run_until_complete(_asgi_times(app, requests[name][:20]))
      if args.profile:
        profile = cProfile.Profile()
        profile.enable()
        loop.run_until_complete(_asgi_times(app, requests['post_search']))
        profile.disable()
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats('tottime').print_stats(35)
        print(out.getvalue())
        return
      found = {}
      large = [('POST', '/search', b'', json.dumps({
          'queries': [f'q{i}' for i in range(256)], 'k': 1000}).encode())] * args.large
      for name, batch in {**requests, 'post_search_256x1000': large}.items():
        cpu = time.process_time()
        times = loop.run_until_complete(_asgi_times(app, batch))
        found[f'asgi_{name}_cpu_us'] = 1e6 * (time.process_time() - cpu) / len(batch)
        found[f'asgi_{name}_us'] = 1e6 * float(np.median(times))
      loop.close()
      servers = [(server_lib.make_server, 'loopback_')]
      if args.old_server_commit:
        old = _old_server(args.old_server_commit, folder).make_server
        servers.insert(0 if args.old_first else 1, (old, 'http_server_loopback_'))
      for make_server, prefix in servers:
        found.update(_loopback(make_server, service, requests, prefix))
    finally:
      service.close()
  print(json.dumps(found))


def _checkout(commit, folder):
  """`jaxret/` of `commit` from git history into `folder`."""
  archive = subprocess.run(['git', 'archive', commit, 'jaxret'], cwd=REPO, check=True,
                           capture_output=True).stdout
  subprocess.run(['tar', '-x', '-C', folder], input=archive, check=True)
  return folder


def _run_worker(code, args, old_server_commit='', old_first=False):
  env = dict(os.environ, PYTHONPATH=code, JAX_PLATFORMS='cpu')
  command = [sys.executable, os.path.abspath(__file__), '--worker', f'--num={args.num}',
             f'--dim={args.dim}', f'--requests={args.requests}', f'--large={args.large}',
             f'--old-server-commit={old_server_commit}'] + ['--old-first'] * old_first
  result = subprocess.run(command, env=env, cwd=code, capture_output=True, text=True,
                          check=False)
  if result.returncode:
    raise RuntimeError(result.stderr[-3000:])
  return json.loads(result.stdout.strip().splitlines()[-1])


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--out', default='benchmarks/results/serving_overhead.json')
  parser.add_argument('--before', default='', help='a commit to compare with ("": none)')
  parser.add_argument('--num', type=int, default=2000)
  parser.add_argument('--dim', type=int, default=64)
  parser.add_argument('--requests', type=int, default=300, help='per measurement')
  parser.add_argument('--large', type=int, default=5, help='requests of 256 queries, k=1000')
  parser.add_argument('--rounds', type=int, default=5)
  parser.add_argument('--old-server-commit', default='8503893',
                      help='the last commit with the http.server layer ("": not measured)')
  parser.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)
  parser.add_argument('--old-first', action='store_true', help=argparse.SUPPRESS)
  parser.add_argument('--profile', action='store_true')
  args = parser.parse_args()
  if args.large and args.num < 1000:
    parser.error('--large asks for k=1000: use --num=1000 or more (or --large=0)')
  if args.worker or args.profile:
    sys.path.insert(0, os.getcwd())
    worker(args)
    return
  with tempfile.TemporaryDirectory() as folder:
    codes = {'after': REPO}
    if args.before:
      codes = {'before': _checkout(args.before, folder), **codes}
    rounds = {name: [] for name in codes}
    load_start = os.getloadavg()
    for round_number in range(args.rounds):
      # Every other round the other order, so that neither gains by going first.
      order = list(codes.items())[::-1 if round_number % 2 else 1]
      for name, code in order:
        # The old http.server is measured once a round, beside this checkout's server.
        old = args.old_server_commit if name == 'after' else ''
        rounds[name].append(_run_worker(code, args, old, old_first=round_number % 2 == 1))
        print(f'round {round_number + 1} {name}: {rounds[name][-1]}', flush=True)
  summary = {name: {figure: {'median': float(np.median([r[figure] for r in found])),
                             'per_round': [r[figure] for r in found]}
                    for figure in found[0]} for name, found in rounds.items()}
  if 'before' in rounds:  # Round by round, so that a round's load cancels out.
    summary['after_over_before'] = {
        figure: {'median': float(np.median(ratios)), 'per_round': ratios}
        for figure in rounds['before'][0]
        for ratios in [[a[figure] / b[figure] for a, b in zip(rounds['after'],
                                                               rounds['before'])]]}
  commit = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=REPO, check=True,
                          capture_output=True, text=True).stdout.strip()
  result = {'machine': {'cpus': os.cpu_count(), 'platform': platform.platform(),
                        'python': platform.python_version(), 'load_average_at_start': load_start,
                        'load_average_at_end': os.getloadavg()},
            'gallery': {'num_items': args.num, 'dim': args.dim, 'method': 'brute_force'},
            'k': K, 'requests_per_measurement': args.requests, 'rounds': args.rounds,
            'after_commit': commit, 'before_commit': args.before or None,
            'old_server_commit': args.old_server_commit or None, 'results': summary}
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, 'w') as f:
    json.dump(result, f, indent=2)
  for figure in summary['after']:
    line = f'{figure}: after {summary["after"][figure]["median"]:.0f}'
    if figure in summary.get('before', {}):
      line += (f', before {summary["before"][figure]["median"]:.0f}; after/before paired by '
               f'round {summary["after_over_before"][figure]["median"]:.2f}')
    print(line)


if __name__ == '__main__':
  main()

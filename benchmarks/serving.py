r"""Serving benchmark: jaxret's index and /search against raw ScaNN, exact search and FAISS HNSW.

  python -m pip install -r requirements-bench.txt   # FAISS (optional)
  python benchmarks/serving.py --out=benchmarks/results/serving.json

Two galleries, each measured in this one process so that every figure can be
read as a ratio taken side by side (the machine may be shared):

  synthetic: --num x --dim float32 unit vectors (default 500k x 256) around
    --clusters Gaussian centres, with held-out queries from the same mixture.
  builtin: the built-in data's test gallery, embedded by a model trained in
    --workdir (default: a `configs/demo.py:runlocal` run, trained here, with a
    500-image test split), queried with its captions.

For each: recall@10 against exact search; queries/s one query at a time and
in batches of --batch for jaxret's `Index.search`, the raw ScaNN searcher it
wraps (same parameters, same object), exact search in NumPy and in JAX, and
FAISS HNSW when installed; build time; index size on disk; and p50/p99 latency
of `GET /search` end to end over loopback (one client, then --clients at once).
The synthetic gallery has no text model: its server embeds a query `q<N>` as
held-out query vector N, so its latency is HTTP + batching + ScaNN. The
synthetic gallery has no slow model either, so "with re-ranking" uses a stand-in
that re-scores the candidates exactly: it measures the hook's plumbing; the slow
re-ranker's own cost is measured in docs/fast_slow.md.

The HTTP figures are measured side by side for today's server (FastAPI on
uvicorn) and the hand-written `http.server` it replaced (taken from git
history, --old-server-commit, into a temporary module), alternating the two
for --rounds rounds on the same service, gallery and queries; each figure is
the median over the rounds, with every round's value kept.
"""

import argparse
import concurrent.futures
import http.client
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=wrong-import-position
import jax
import jax.numpy as jnp
import ml_collections

from jaxret import errors
from jaxret.index import exact
from jaxret.index import store
from jaxret.serve import server as server_lib
from jaxret.serve import service as service_lib

K = 10


def _index_config(**overrides):
  config = ml_collections.ConfigDict(dict(
      method='auto', brute_force_below=10_000, num_leaves=0, num_leaves_to_search=0,
      reorder=0, dims_per_block=2, anisotropic_threshold=0.2))
  config.update(overrides)
  return config


def clustered_gallery(num, dim, clusters, num_queries, noise, seed=0):
  """Unit vectors: Gaussian centres plus isotropic noise; queries from the same mixture."""
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(clusters, dim)).astype(np.float32)

  def sample(count):
    out = np.empty((count, dim), np.float32)
    for start in range(0, count, 65536):
      n = min(65536, count - start)
      block = centres[rng.integers(clusters, size=n)] + noise * rng.normal(
          size=(n, dim)).astype(np.float32)
      out[start:start + n] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out

  return sample(num), sample(num_queries)


def exact_numpy(queries, database, k=K, chunk=256):
  rows = [exact.top_k(queries[s:s + chunk], database, k)[0]
          for s in range(0, len(queries), chunk)]
  return np.concatenate(rows)


def recall_at_k(found_rows, true_rows):
  return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found_rows, true_rows)]))


def _qps(fn, queries, seconds, step):
  """Queries per second of `fn` on `step` queries at a time, cycling through `queries` for
  about `seconds` (at least one call)."""
  fn(queries[:step])  # Warm (compilation, caches).
  count, start = 0, time.perf_counter()
  while True:
    first = count % (len(queries) - step + 1)
    fn(queries[first:first + step])
    count += step
    elapsed = time.perf_counter() - start
    if elapsed >= seconds:
      return count / elapsed


def side_by_side(contenders, queries, batch, seconds, rounds=3):
  """{name: {'single_qps', 'batched_qps'}}, measured in interleaved rounds (medians).

  `contenders` maps a name to `(single_fn, batched_fn)`, each taking (Q, D) queries.
  """
  singles = {name: [] for name in contenders}
  batches = {name: [] for name in contenders}
  for _ in range(rounds):
    for name, (single_fn, batched_fn) in contenders.items():
      singles[name].append(_qps(single_fn, queries, seconds, 1))
      batches[name].append(_qps(batched_fn, queries, seconds, min(batch, len(queries))))
  return {name: {'single_qps': float(np.median(singles[name])),
                 'batched_qps': float(np.median(batches[name]))} for name in contenders}


def paired(fn_a, fn_b, queries, step, seconds):
  """`fn_a`'s time over `fn_b`'s, called alternately on the same queries (the order flipping
  each time) and summarised by medians, so that bursts of load from other processes on the
  machine hit both alike and drop out.

  Returns (median of per-pair time ratios, median microseconds per call of a, of b).
  """
  fn_a(queries[:step])
  fn_b(queries[:step])
  times_a, times_b = [], []
  start = time.perf_counter()
  while time.perf_counter() - start < seconds:
    first = (len(times_a) * step) % (len(queries) - step + 1)
    batch = queries[first:first + step]
    order = ((fn_a, times_a), (fn_b, times_b))
    for fn, times in (order if len(times_a) % 2 else order[::-1]):
      t = time.perf_counter()
      fn(batch)
      times.append(time.perf_counter() - t)
  times_a, times_b = np.asarray(times_a), np.asarray(times_b)
  return (float(np.median(times_a / times_b)), 1e6 * float(np.median(times_a)),
          1e6 * float(np.median(times_b)))


def _dir_bytes(path):
  return sum(os.path.getsize(os.path.join(folder, name))
             for folder, _, names in os.walk(path) for name in names)


def jax_exact(database, k=K):
  device_db = jax.device_put(jnp.asarray(database))
  top_k = jax.jit(lambda q, db: jax.lax.top_k(q @ db.T, k))

  def search(queries):
    return np.asarray(top_k(jnp.asarray(queries), device_db)[1])

  return search


def faiss_hnsw(database, queries, true_rows, m, ef_construction, target_recall):
  """(single_fn, batched_fn, info) for an HNSW index with the smallest efSearch that reaches
  `target_recall` (or the largest tried), or None without FAISS."""
  try:
    import faiss  # pylint: disable=import-outside-toplevel
  except ImportError:
    return None
  index = faiss.IndexHNSWFlat(database.shape[1], m, faiss.METRIC_INNER_PRODUCT)
  index.hnsw.efConstruction = ef_construction
  start = time.time()
  index.add(database)
  build_seconds = time.time() - start
  faiss.omp_set_num_threads(1)  # Search on one thread, as ScaNN's search_batched does.
  tried = {}
  for ef in (16, 32, 64, 128, 256, 512):
    index.hnsw.efSearch = ef
    tried[ef] = recall_at_k(index.search(queries, K)[1], true_rows)
    if tried[ef] >= target_recall:
      break
  with tempfile.TemporaryDirectory() as tmp:
    faiss.write_index(index, os.path.join(tmp, 'hnsw.faiss'))
    size = os.path.getsize(os.path.join(tmp, 'hnsw.faiss'))
  info = {'M': m, 'efConstruction': ef_construction, 'efSearch': ef,
          'recall_at_10': tried[ef], 'recall_by_efSearch': tried,
          'build_seconds': build_seconds, 'size_bytes': size, 'threads': 1,
          'version': faiss.__version__}
  search = lambda q: index.search(q, K)
  return search, search, info


def compare_searchers(database, ids, queries, *, step, index_config, args, label):
  """Builds jaxret's index and the others on one gallery; returns the JSON section."""
  print(f'[{label}] exact ground truth for {len(queries)} queries ...', flush=True)
  true_rows = exact_numpy(queries, database)
  with tempfile.TemporaryDirectory() as tmp:
    out_dir = os.path.join(tmp, 'index')
    print(f'[{label}] building the jaxret index of {database.shape} ...', flush=True)
    start = time.time()
    manifest = store.build(database, ids, step=step, index_config=index_config, out_dir=out_dir)
    build_total = time.time() - start
    size = _dir_bytes(out_dir)
    start = time.time()
    index = store.load(out_dir)
    load_seconds = time.time() - start
  row_of = {image_id: row for row, image_id in enumerate(np.asarray(ids).tolist())}
  found_ids, _ = index.search(queries, K)
  found_rows = [[row_of[i] for i in hit] for hit in found_ids.tolist()]
  params = manifest['build_params']
  reorder = params.get('reorder', 0)
  raw = index.searcher  # The very searcher jaxret wraps, called directly.

  def raw_search(q):
    return raw.search_batched(q, final_num_neighbors=K,
                              pre_reorder_num_neighbors=max(reorder, K) if reorder else None)

  contenders = {
      'jaxret_index': (lambda q: index.search(q, K), lambda q: index.search(q, K)),
      'raw_scann': (raw_search, raw_search),
      'exact_numpy': (lambda q: exact.top_k(q, database, K),
                      lambda q: exact.top_k(q, database, K)),
  }
  jax_search = jax_exact(database)
  contenders['exact_jax'] = (jax_search, jax_search)
  hnsw = None
  if not args.skip_faiss:
    print(f'[{label}] building FAISS HNSW ...', flush=True)
    hnsw = faiss_hnsw(database, queries, true_rows, args.hnsw_m, args.hnsw_ef_construction,
                      0.95)
    if hnsw is not None:
      contenders['faiss_hnsw'] = hnsw[:2]
  print(f'[{label}] queries/s side by side ...', flush=True)
  speed = side_by_side(contenders, queries, args.batch, args.seconds)
  jaxret, raw_speed = speed['jaxret_index'], speed['raw_scann']
  section = {
      'gallery': {'num_items': int(len(database)), 'dim': int(database.shape[1]),
                  'num_queries': int(len(queries))},
      'index': {'build_params': params, 'scann_build_seconds': manifest['build_seconds'],
                'build_total_seconds': build_total, 'size_bytes': size,
                'load_seconds': load_seconds},
      'recall_at_10': {'jaxret_index': recall_at_k(found_rows, true_rows), 'raw_scann': None},
      'qps': speed,
      'batch_size': args.batch,
      'ratios': {
          'jaxret_over_raw_scann_single': jaxret['single_qps'] / raw_speed['single_qps'],
          'jaxret_over_raw_scann_batched': jaxret['batched_qps'] / raw_speed['batched_qps'],
          'jaxret_over_exact_numpy_single':
              jaxret['single_qps'] / speed['exact_numpy']['single_qps'],
          'jaxret_over_exact_numpy_batched':
              jaxret['batched_qps'] / speed['exact_numpy']['batched_qps'],
          'jaxret_over_exact_jax_single': jaxret['single_qps'] / speed['exact_jax']['single_qps'],
          'jaxret_over_exact_jax_batched':
              jaxret['batched_qps'] / speed['exact_jax']['batched_qps'],
      },
  }
  # jaxret's own overhead, measured call by call against the raw searcher it wraps.
  section['paired_jaxret_vs_raw_scann'] = {}
  for name, step in (('single', 1), ('batched', min(args.batch, len(queries)))):
    ratio, jaxret_us, raw_us = paired(lambda q: index.search(q, K), raw_search, queries, step,
                                      3 * args.seconds)
    section['paired_jaxret_vs_raw_scann'][name] = {
        'qps_ratio': 1 / ratio, 'jaxret_us_per_call': jaxret_us, 'raw_us_per_call': raw_us}
  raw_rows = raw_search(queries)[0]
  section['recall_at_10']['raw_scann'] = recall_at_k(np.asarray(raw_rows), true_rows)
  if hnsw is not None:
    section['faiss_hnsw'] = hnsw[2]
    section['recall_at_10']['faiss_hnsw'] = hnsw[2]['recall_at_10']
  return section, index


class VectorQueries:
  """A stand-in text encoder for the synthetic gallery: text `q<N>` is query vector N."""

  def __init__(self, vectors):
    self.vectors = vectors

  def prepare(self, texts):
    rows = []
    for text in texts:
      if not (isinstance(text, str) and text[:1] == 'q' and text[1:].isdigit()
              and int(text[1:]) < len(self.vectors)):
        raise errors.UserError(f'synthetic queries are q0 ... q{len(self.vectors) - 1}')
      rows.append(int(text[1:]))
    return np.asarray(rows, np.int64)[:, None]

  def embed(self, prepared):
    return self.vectors[prepared[:, 0]]


class ExactRescorer:
  """Stand-in re-ranker: re-scores the candidates by exact inner product (no slow model)."""
  name = 'exact-rescore stand-in'
  bucket_costs_ms = {}  # No latency budgets: it re-scores whatever it is given.

  def __init__(self, index, database, vectors_of, num_candidates=100):
    self.row_of = {image_id: row for row, image_id in enumerate(index.ids.tolist())}
    self.database = database
    self.vectors_of = vectors_of
    self.num_candidates = num_candidates

  def __call__(self, query, candidate_ids, fast_scores):
    del fast_scores
    rows = [self.row_of[i] for i in candidate_ids]
    return self.database[rows] @ self.vectors_of(query)


OLD_SERVER_COMMIT = '8503893'  # The last commit with the hand-written http.server.


def load_old_server(commit, folder):
  """The `jaxret/serve/server.py` of `commit` as a module (it serves today's service)."""
  source = subprocess.run(['git', 'show', f'{commit}:jaxret/serve/server.py'], check=True,
                          capture_output=True, text=True,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__)))).stdout
  path = os.path.join(folder, 'old_server.py')
  with open(path, 'w') as f:
    f.write(source)
  spec = importlib.util.spec_from_file_location('old_server', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _median_of_rounds(rounds):
  """{'one_client': {...}, 'N_clients': {...}} with each figure the median over rounds."""
  summary = {'rerank': rounds[0]['rerank'], 'rounds': len(rounds)}
  for part in rounds[0]:
    if part == 'rerank':
      continue
    summary[part] = {name: float(np.median([r[part][name] for r in rounds]))
                     for name in rounds[0][part]}
    summary[part]['per_round'] = {name: [r[part][name] for r in rounds]
                                  for name in rounds[0][part] if name != 'requests'}
  return summary


def http_side_by_side(service, texts, args, rerank=False):
  """(today's server, the old http.server) latency and throughput, alternated by round."""
  servers = {'fastapi_uvicorn': server_lib.make_server}
  if args.old_server_commit:
    with tempfile.TemporaryDirectory() as folder:
      servers['http_server'] = load_old_server(args.old_server_commit, folder).make_server
  rounds = {name: [] for name in servers}
  for _ in range(args.rounds):
    for name, make in servers.items():
      rounds[name].append(http_latency(service, texts, args.requests, args.clients, rerank,
                                       make))
  found = {name: _median_of_rounds(values) for name, values in rounds.items()}
  if args.old_server_commit:
    found['http_server']['commit'] = args.old_server_commit
  return found


def http_latency(service, texts, requests, clients, rerank=False,
                 make_server=server_lib.make_server):
  """p50/p99 of GET /search over loopback: one client, then `clients` at once."""
  server = make_server(service, '127.0.0.1', 0)
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  host, port = server.server_address[:2]

  def run(worker, count):
    connection = http.client.HTTPConnection(host, port, timeout=60)
    latencies = []
    for i in range(count):
      query = urllib.parse.urlencode({'q': texts[(worker * 7919 + i) % len(texts)], 'k': K,
                                      'rerank': int(rerank)})
      start = time.perf_counter()
      connection.request('GET', '/search?' + query)
      response = connection.getresponse()
      body = response.read()
      latencies.append(time.perf_counter() - start)
      if response.status != 200:
        raise RuntimeError(body)
    connection.close()
    return latencies

  try:
    run(0, 20)  # Warm.
    single = np.asarray(run(0, requests)) * 1000
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
      loaded = np.concatenate(list(pool.map(lambda w: run(w, requests // clients),
                                            range(clients)))) * 1000
    seconds = time.perf_counter() - start
  finally:
    server.shutdown()
    server.server_close()
  return {
      'rerank': rerank,
      'one_client': {'requests': len(single), 'p50_ms': float(np.percentile(single, 50)),
                     'p99_ms': float(np.percentile(single, 99))},
      f'{clients}_clients': {'requests': len(loaded), 'p50_ms': float(np.percentile(loaded, 50)),
                             'p99_ms': float(np.percentile(loaded, 99)),
                             'requests_per_s': len(loaded) / seconds},
  }


def synthetic(args):
  print(f'[synthetic] generating {args.num} x {args.dim} ...', flush=True)
  database, queries = clustered_gallery(args.num, args.dim, args.clusters, args.queries,
                                        args.noise)
  ids = np.arange(args.num, dtype=np.int64)
  section, index = compare_searchers(database, ids, queries, step=0,
                                     index_config=_index_config(), args=args, label='synthetic')
  section['gallery'].update(clusters=args.clusters, noise=args.noise)
  texts = [f'q{i}' for i in range(len(queries))]
  service = service_lib.SearchService(index, VectorQueries(queries), model_step=0)
  try:
    side_by_side = http_side_by_side(service, texts, args)
    section['http_search'] = side_by_side.pop('fastapi_uvicorn')
    section['http_search_before'] = side_by_side.get('http_server')
  finally:
    service.close()
  rescorer = ExactRescorer(index, database, lambda text: queries[int(text[1:])])
  service = service_lib.SearchService(index, VectorQueries(queries), model_step=0,
                                      reranker=rescorer)
  try:
    section['http_search_rerank_stand_in'] = http_latency(service, texts, args.requests,
                                                          args.clients, rerank=True)
  finally:
    service.close()
  return section


def builtin(args):
  workdir = args.workdir
  if workdir is None:
    workdir = os.path.join(tempfile.mkdtemp(prefix='jaxret-bench-'), 'workdir')
    print(f'[builtin] training a runlocal model in {workdir} ...', flush=True)
    subprocess.run([sys.executable, '-m', 'jaxret.main', '--mode=demo',
                    '--config=configs/demo.py:runlocal', f'--workdir={workdir}',
                    f'--config.data.num_test={args.builtin_test_images}'],
                   cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), check=True,
                   stdout=subprocess.DEVNULL)
  from jaxret.config import workdir as workdir_config  # pylint: disable=import-outside-toplevel
  config = workdir_config.load(workdir)
  with np.load(os.path.join(workdir, 'export', 'embeddings.npz')) as exported:
    database, ids = exported['image_emb'], exported['image_ids']
    queries, texts, step = exported['text_emb'], exported['texts'], int(exported['step'])
  section, _ = compare_searchers(database, ids, queries, step=step,
                                 index_config=config.index, args=args, label='builtin')
  section['workdir'] = workdir
  section['model'] = {'image': config.model.image.to_dict(), 'text': config.model.text.to_dict(),
                      'embed_dim': config.model.embed_dim, 'step': step}
  print('[builtin] starting the service (restore, warm-up) ...', flush=True)
  service = service_lib.from_workdir(config, workdir)
  try:
    section['warmup_seconds'] = service.warmup_seconds
    side_by_side = http_side_by_side(service, [str(t) for t in texts], args)
    section['http_search'] = side_by_side.pop('fastapi_uvicorn')
    section['http_search_before'] = side_by_side.get('http_server')
  finally:
    service.close()
  return section


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--out', default='benchmarks/results/serving.json')
  parser.add_argument('--num', type=int, default=500_000)
  parser.add_argument('--dim', type=int, default=256)
  parser.add_argument('--clusters', type=int, default=1000)
  parser.add_argument('--noise', type=float, default=0.75)
  parser.add_argument('--queries', type=int, default=1000)
  parser.add_argument('--batch', type=int, default=256)
  parser.add_argument('--seconds', type=float, default=1.0, help='per QPS measurement')
  parser.add_argument('--requests', type=int, default=400, help='per latency measurement')
  parser.add_argument('--clients', type=int, default=8)
  parser.add_argument('--rounds', type=int, default=3, help='alternated HTTP measurements')
  parser.add_argument('--old-server-commit', default=OLD_SERVER_COMMIT,
                      help="the http.server to compare with ('': none)")
  parser.add_argument('--hnsw-m', type=int, default=32)
  parser.add_argument('--hnsw-ef-construction', type=int, default=80)
  parser.add_argument('--skip-faiss', action='store_true')
  parser.add_argument('--only', choices=('synthetic', 'builtin'), default=None)
  parser.add_argument('--workdir', default=None, help='a trained workdir for the builtin run')
  parser.add_argument('--builtin-test-images', type=int, default=500)
  args = parser.parse_args()
  results = {
      'machine': {'cpus': os.cpu_count(), 'platform': platform.platform(),
                  'python': platform.python_version(), 'jax': jax.__version__,
                  'numpy': np.__version__, 'load_average_at_start': os.getloadavg()},
      'k': K,
  }
  if args.only in (None, 'synthetic'):
    results['synthetic'] = synthetic(args)
  if args.only in (None, 'builtin'):
    results['builtin'] = builtin(args)
  results['machine']['load_average_at_end'] = os.getloadavg()
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, 'w') as f:
    json.dump(results, f, indent=2)
  print(json.dumps(results, indent=2))


if __name__ == '__main__':
  main()

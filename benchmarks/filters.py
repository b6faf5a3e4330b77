r"""Filtered search benchmark: recall@10 against exact filtered search, and queries/s.

  python benchmarks/filters.py --out=benchmarks/results/filters.json

A synthetic gallery (default 500k x 64 float32 unit vectors around 1,000
Gaussian centres, the ScaNN tree-AH index `--mode=index` builds for it) whose
items carry a number `bucket`, uniform over 0..999, and a string `tag`. A
filter `{"bucket": {"lt": 1000 * s}}` passes exactly a share s of the items,
for s in --selectivities (50%, 10%, 1%, 0.1%). For each: the strategy the
index picks (`jaxret/index/store.py`: ScaNN with over-fetch for wide filters,
exact search over the passing rows for narrow ones), recall@10 against exact
search over the passing rows, and queries/s one query per call as the server
runs them (the filter's mask computed each call), as the median of --rounds
rounds with their spread. The same for an equality filter on `tag` and for
no filter (`Index.search`). Each row also checks that every hit passes.
"""

import argparse
import json
import os
import platform
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=wrong-import-position
import ml_collections

from benchmarks import serving
from jaxret.index import exact
from jaxret.index import store

K = 10
TAGS = 20


def _qps(search_one, queries, rounds):
  """Median and spread of queries/s over `rounds` passes, one query per call."""
  search_one(queries[0])  # Warm.
  rates = []
  for _ in range(rounds):
    start = time.perf_counter()
    for query in queries:
      search_one(query)
    rates.append(len(queries) / (time.perf_counter() - start))
  return {'median': float(np.median(rates)), 'min': float(np.min(rates)),
          'max': float(np.max(rates)), 'rounds': rounds}


def measure(index, database, queries, expression, rounds):
  mask = index.filter_mask(expression)
  passed = mask.passed
  rows = np.flatnonzero(passed)
  truth = rows[np.concatenate([exact.top_k(queries[s:s + 256], database[rows], K)[0]
                               for s in range(0, len(queries), 256)])]
  found, _, report = index.search_filtered(queries, K, mask)
  row_of = {image_id: row for row, image_id in enumerate(index.ids.tolist())}
  found_rows = np.vectorize(row_of.__getitem__)(found)
  assert passed[found_rows].all(), 'a hit fails the filter'

  def search_one(query):
    index.search_filtered(query[None], K, index.filter_mask(expression))

  return {'filter': expression, 'selectivity': float(passed.mean()), 'matched': int(passed.sum()),
          'strategy': report['strategy'], f'recall_at_{K}': serving.recall_at_k(found_rows, truth),
          'qps_one_query_per_call': _qps(search_one, queries, rounds)}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--out', default='benchmarks/results/filters.json')
  parser.add_argument('--num', type=int, default=500_000)
  parser.add_argument('--dim', type=int, default=64)
  parser.add_argument('--clusters', type=int, default=1000)
  parser.add_argument('--noise', type=float, default=0.75)
  parser.add_argument('--queries', type=int, default=200)
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--selectivities', default='0.5,0.1,0.01,0.001')
  args = parser.parse_args()
  load_start = os.getloadavg()
  print(f'generating {args.num} x {args.dim} ...', flush=True)
  database, queries = serving.clustered_gallery(args.num, args.dim, args.clusters,
                                                args.queries, args.noise)
  rng = np.random.default_rng(1)
  buckets = rng.permutation(np.arange(args.num) % 1000)
  tags = rng.integers(TAGS, size=args.num)
  metadata = [{'bucket': int(b), 'tag': f't{t}'} for b, t in zip(buckets, tags)]
  config = ml_collections.ConfigDict(dict(
      method='auto', brute_force_below=10_000, num_leaves=0, num_leaves_to_search=0,
      reorder=0, dims_per_block=2, anisotropic_threshold=0.2))
  print('building the index ...', flush=True)
  with tempfile.TemporaryDirectory() as folder:
    start = time.perf_counter()
    manifest = store.build(database, np.arange(args.num), step=0, index_config=config,
                           out_dir=folder, metadata=metadata)
    build_seconds = time.perf_counter() - start
    index = store.load(folder)
  rows = []
  for selectivity in [float(s) for s in args.selectivities.split(',')]:
    expression = {'bucket': {'lt': int(round(1000 * selectivity))}}
    rows.append(measure(index, database, queries, expression, args.rounds))
    print(json.dumps(rows[-1]), flush=True)
  rows.append(measure(index, database, queries, {'tag': {'in': ['t0', 't1']}}, args.rounds))
  print(json.dumps(rows[-1]), flush=True)
  unfiltered = _qps(lambda query: index.search(query[None], K), queries, args.rounds)
  results = {
      'machine': {'cpus': os.cpu_count(), 'platform': platform.platform(),
                  'python': platform.python_version(), 'numpy': np.__version__,
                  'load_average_at_start': load_start, 'load_average_at_end': os.getloadavg()},
      'gallery': {'num': args.num, 'dim': args.dim, 'clusters': args.clusters,
                  'noise': args.noise, 'queries': args.queries},
      'index': {'build_params': manifest['build_params'], 'build_seconds': build_seconds,
                'filter_exact_below': store.FILTER_EXACT_BELOW,
                'filter_overfetch': store.FILTER_OVERFETCH},
      'k': K,
      'filtered': rows,
      'unfiltered_qps_one_query_per_call': unfiltered,
  }
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, 'w') as f:
    json.dump(results, f, indent=2)
  print(json.dumps(results, indent=2))


if __name__ == '__main__':
  main()

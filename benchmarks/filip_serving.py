r"""FILIP served as trained: token-wise re-ranking of a pooled shortlist, against pooled only.

  python -m jaxret.main --mode=demo --workdir=/tmp/jaxret-filip \
      --config=configs/filip.py:runlocal,steps=300 --config.data.num_test=500
  python benchmarks/filip_serving.py --workdir=/tmp/jaxret-filip \
      --out=benchmarks/results/filip_serving.json

On the workdir's test gallery, queried with all its captions through
`SearchService.search` (the service the server calls, so no HTTP):

  recall: text→image R@1/5/10 served pooled-only and served token-wise for each
    --shortlists size (bfloat16) and each storage dtype (float32, bfloat16, int8;
    at --latency-shortlist), next to
    the evaluator's token-wise and pooled recall (`eval/results.json`);
  latency: p50/p99 of one query at a time, pooled-only and token-wise (shortlist
    --latency-shortlist), --rounds rounds interleaved so that a shared machine's
    load falls on both alike, each round's p50 reported (the spread);
  size: bytes of the stored patch tokens per dtype.
"""

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=wrong-import-position
import jax

from jaxret.config import workdir as workdir_config
from jaxret.data import sources
from jaxret.evaluate import embed
from jaxret.index import token_store
from jaxret.inference import restore as restore_lib
from jaxret.serve import service as service_lib


def _recall(service, texts, wanted, batch=64):
  ranks = []
  for start in range(0, len(texts), batch):
    found = service.search([str(t) for t in texts[start:start + batch]], 10)
    for result, image_id in zip(found['results'], wanted[start:start + batch]):
      ids = [str(i) for i in result['ids']]
      ranks.append(ids.index(str(image_id)) if str(image_id) in ids else 10)
  ranks = np.asarray(ranks)
  return {f'R@{k}': round(100 * float(np.mean(ranks < k)), 2) for k in (1, 5, 10)}


def _latencies(service, texts):
  seconds = []
  for text in texts:
    start = time.perf_counter()
    service.search([str(text)], 10)
    seconds.append(time.perf_counter() - start)
  return 1000 * np.asarray(seconds)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', required=True, help='a FILIP workdir after --mode=demo')
  parser.add_argument('--shortlists', default='10,25,50,100,200')
  parser.add_argument('--latency-shortlist', type=int, default=100)
  parser.add_argument('--latency-queries', type=int, default=200)
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--out', default='benchmarks/results/filip_serving.json')
  args = parser.parse_args()

  config = workdir_config.load(args.workdir)
  service = service_lib.from_workdir(config, args.workdir)
  tokenwise = service.tokenwise
  if tokenwise is None:
    sys.exit('error: the workdir stores no patch tokens; index it with index.token_dtype set')
  with np.load(os.path.join(args.workdir, 'export', 'embeddings.npz')) as exported:
    texts, wanted = exported['texts'], exported['text_image_ids']
  evaluated = json.load(open(os.path.join(args.workdir, 'eval', 'results.json')))
  # The float32 patch tokens, from which each dtype's store is made.
  restored = restore_lib.restore(config, args.workdir, service.model_step)
  records = sources.load_split(config.data, service.index.manifest['split'])
  row_of = {i: r for r, i in enumerate(np.asarray(records.image_ids).tolist())}
  ids = tokenwise.token_store.ids
  embedder = embed.Embedder(restored.model, restored.mesh, config.eval.batch_size, config.data,
                            per_token=True)
  tokens = embedder.images(restored.params, records.images[[row_of[i] for i in ids.tolist()]])

  report = {
      'workdir': os.path.abspath(args.workdir), 'model_step': service.model_step,
      'gallery': len(service.index), 'queries': len(texts),
      'evaluator': {'token_wise': {f'R@{k}': round(100 * evaluated[f't2i/R@{k}'], 2)
                                   for k in (1, 5, 10)},
                    'pooled': {f'R@{k}': round(100 * evaluated[f'pooled/t2i/R@{k}'], 2)
                               for k in (1, 5, 10)}},
      'served': {}, 'store_bytes': {},
      'machine': {'platform': platform.platform(), 'cpus': os.cpu_count(),
                  'jax_backend': jax.default_backend()},
  }
  service.tokenwise = None
  report['served']['pooled_only'] = _recall(service, texts, wanted)
  shortlists = [int(s) for s in args.shortlists.split(',')]
  for dtype in token_store.DTYPES:
    stored, scales = token_store.quantize(tokens, dtype)
    tokenwise.token_store = token_store.TokenStore(ids, stored, scales, {'dtype': dtype})
    report['store_bytes'][dtype] = int(stored.nbytes + (0 if scales is None else scales.nbytes))
    service.tokenwise = tokenwise
    # Every shortlist in the config's dtype; the others at the latency shortlist.
    for shortlist in shortlists if dtype == 'bfloat16' else [args.latency_shortlist]:
      tokenwise.num_candidates = shortlist
      report['served'][f'{dtype}/shortlist_{shortlist}'] = _recall(service, texts, wanted)
      print(dtype, shortlist, report['served'][f'{dtype}/shortlist_{shortlist}'], flush=True)

  # Latency, pooled-only and token-wise (bfloat16, the config's dtype) rounds interleaved.
  stored, scales = token_store.quantize(tokens, 'bfloat16')
  tokenwise.token_store = token_store.TokenStore(ids, stored, scales, {'dtype': 'bfloat16'})
  tokenwise.num_candidates = args.latency_shortlist
  queries = texts[:args.latency_queries]
  rounds = {'pooled_only': [], 'token_wise': []}
  for _ in range(args.rounds):
    for name, hook in (('pooled_only', None), ('token_wise', tokenwise)):
      service.tokenwise = hook
      _latencies(service, queries[:10])  # Warm caches.
      rounds[name].append(_latencies(service, queries))
  report['latency_ms'] = {
      'shortlist': args.latency_shortlist, 'dtype': 'bfloat16', 'queries_per_round': len(queries),
      **{name: {'p50': round(float(np.median(np.concatenate(values))), 3),
                'p99': round(float(np.percentile(np.concatenate(values), 99)), 3),
                'p50_per_round': [round(float(np.median(v)), 3) for v in values]}
         for name, values in rounds.items()}}
  service.close()
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, 'w') as f:
    json.dump(report, f, indent=2)
  print(json.dumps(report, indent=2))


if __name__ == '__main__':
  main()

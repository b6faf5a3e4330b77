"""The Fast and Slow comparison of Miech et al. (2021) on the test split.

Rows: Fast (the undistilled dual encoder of `rerank.fast_workdir`; '' leaves it out), Fast
distilled (the evaluated model; named Fast when it was not trained by `distill`), Slow
(h over the whole gallery), and Fast+Slow
for each K in `rerank.ks` (the distilled model's top K re-ranked by h + β · fast
score; below K the fast order stays). Every row answers the same queries (one
caption per image, `eval.max_queries` images). Fast and Fast+Slow answer them one at a
time, and their mean query time covers the whole path: encoding the text, the fast
search (ScaNN), and the slow scoring of the candidates against precomputed visual
tokens. Exhaustive Slow is timed at its fastest, queries in batches (`score_gallery`,
each image's keys and values projected once per batch): the time per query is the
batch's divided by its queries, which favours Slow in the speed-up. `slow_storage`
compares stored visual tokens with stored keys and values (bytes per image; one query
alone, per pair).
Writes `fast_slow.json`, `fast_slow.md` (a table) and `fast_slow.png`
(R@1 and query time against K) to the output directory.
"""

import json
import os
import time

import jax
import numpy as np

from jaxret.config import workdir as workdir_config
from jaxret.data import pipeline
from jaxret.evaluate import base
from jaxret.evaluate import recall
from jaxret.evaluate import slow_retrieval
from jaxret.index import scann_index
from jaxret.models import capabilities
from jaxret.rerank import buckets as buckets_lib
from jaxret.rerank import reranker as reranker_lib
from jaxret.rerank import scorer as scorer_lib
from jaxret.inference import restore as restore_lib

KS = (1, 5, 10)
ENCODE_BATCH = 256
# Queries that time exhaustive Slow over each kind of stored features (scorer.FEATURES).
FEATURE_TIMING_QUERIES = 20
# Gallery images of that timing: the cost per pair does not depend on the gallery, and
# stored keys and values of a large gallery outgrow memory (about 0.5 MB per image).
STORAGE_IMAGES = 500


class _Fast:
  """A fast model (`capabilities.PooledEncoder`) answering one query at a time: encode
  the text, search the gallery."""

  def __init__(self, model, params, tokenizer, data_config, images, index_config):
    capabilities.require(model, capabilities.PooledEncoder, 'the fast model of fast_slow')
    self.tokenizer = tokenizer
    self._text = jax.jit(lambda p, t, m: model.apply({'params': p}, t, m,
                                                     method=model.encode_text)[0])
    self._image = jax.jit(lambda p, x: model.apply({'params': p}, x,
                                                   method=model.encode_image)[0])
    self.params = jax.device_get(params)
    image_emb = np.concatenate([
        np.asarray(self._image(self.params, pipeline.normalize_images(
            np.asarray(images[i:i + 64]), data_config))) for i in range(0, len(images), 64)])
    self.image_emb = image_emb
    self.searcher = scann_index.build(
        image_emb, scann_index.build_params(len(image_emb), image_emb.shape[1], index_config))

  def embed(self, text):
    tokens, mask = self.tokenizer.encode([text])
    return np.asarray(self._text(self.params, tokens, mask))

  def search(self, text, k):
    """(rows (k,), scores (k,)) of the top k, and the seconds it took."""
    start = time.perf_counter()
    rows, scores = scann_index.search(self.searcher, self.embed(text), k)
    return rows[0], scores[0], time.perf_counter() - start

  def all_captions(self, records):
    """Text→image R@1/5/10 over every caption of the split (not timed)."""
    image_index, texts = records.pairs()
    ranks = []  # A block of captions at a time: 250,000 x 50,000 scores would not fit.
    for start in range(0, len(texts), ENCODE_BATCH):
      tokens, mask = self.tokenizer.encode(texts[start:start + ENCODE_BATCH])
      count = len(tokens)  # The last chunk padded to the batch: one compiled shape.
      text_emb = np.asarray(self._text(self.params, buckets_lib.pad_rows(tokens, ENCODE_BATCH),
                                       buckets_lib.pad_rows(mask, ENCODE_BATCH)))[:count]
      ranks.append(recall.ranks_of_rows(text_emb @ self.image_emb.T,
                                        image_index[start:start + count]))
    ranks = recall.Ranks(*(np.concatenate(field) for field in zip(*ranks)))
    return {f'all_captions/t2i/R@{k}': float(np.mean(ranks.recall(k))) for k in KS}

  def ranks(self, texts, right_rows):
    """`recall.Ranks` of the right images over the whole gallery, and the mean query time
    (the text encoder compiled before the clock starts)."""
    self.search(texts[0], 10)
    seconds, scores = [], []
    for text in texts:
      _, _, took = self.search(text, 10)  # The timed path: encode + index search.
      seconds.append(took)
      scores.append(self.image_emb @ self.embed(text)[0])
    return recall.ranks_of_rows(np.stack(scores), right_rows), float(np.mean(seconds))


class FastSlowEvaluator(base.Evaluator):
  """See the module docstring. Returns flat metrics (`distilled/t2i/R@1`, ...)."""
  requires = (capabilities.PooledEncoder,)

  def __init__(self, model, mesh, records, tokenizer, config, split=None, output_dir=None):
    del mesh, split
    self.model = model
    self.records = records
    self.tokenizer = tokenizer
    self.config = config
    self.output_dir = output_dir

  def _restore_fast(self, workdir):
    config = workdir_config.load(workdir)
    restored = restore_lib.restore(config, workdir)
    return _Fast(restored.model, restored.params, restored.tokenizer, config.data,
                 self.records.images, self.config.index)

  def __call__(self, params):
    rerank = self.config.rerank
    texts, text_ids = slow_retrieval.query_captions(self.records, self.config.eval.max_queries)
    right = recall.rows_of(self.records.image_ids, text_ids)
    rows, results = [], {}

    def add(name, ranks, seconds, k=None, **extra):
      metrics = recall.rank_metrics('t2i', ranks, KS)
      rows.append({'name': name, 'k': k, **metrics, 'query_ms': 1000 * seconds, **extra})
      key = name.lower().replace(' ', '_').replace('+', '_') + (f'_k{k}' if k else '')
      results.update({f'{key}/{m}': v for m, v in metrics.items()})
      results[f'{key}/query_ms'] = 1000 * seconds

    distilled = _Fast(self.model, params, self.tokenizer, self.config.data,
                      self.records.images, self.config.index)
    if rerank.fast_workdir:
      fast = self._restore_fast(rerank.fast_workdir)
      add('Fast', *fast.ranks(texts, right), **fast.all_captions(self.records))
    distilled_ranks, distilled_seconds = distilled.ranks(texts, right)
    # The evaluated model: the distilled student, or (not trained by `distill`) a plain Fast.
    add('Fast distilled' if self.config.loss.name == 'distill' else 'Fast', distilled_ranks,
        distilled_seconds,
        **distilled.all_captions(self.records))

    scorer, slow_tokenizer, _ = reranker_lib.restore_scorer(rerank.slow_workdir, rerank,
                                                            self.config.data)
    visual = scorer.gallery_features(self.records.images)
    tokens, mask = slow_tokenizer.encode(texts)
    slow_ranks, seconds = exhaustive(scorer, tokens, mask, visual, right)
    add('Slow', slow_ranks, seconds, pair_us=1e6 * seconds / len(self.records),
        features=scorer.features, batched_queries=True)

    ids = np.arange(len(self.records))
    reranker = reranker_lib.FastSlowReranker(scorer, slow_tokenizer, ids, visual,
                                             num_candidates=max(rerank.ks), beta=rerank.beta)

    def fast_slow(text, query_tokens, query_mask, k):
      candidates, fast_scores, _ = distilled.search(text, k)
      final, _ = reranker.rerank(query_tokens, query_mask, candidates[None], fast_scores[None])
      return candidates[np.argsort(-final[0], kind='stable')]

    fast_expected = distilled_ranks.expected()  # A miss's rank, for the median rank.
    for k in rerank.ks:
      for probe in buckets_lib.length_probes(tokens, mask, scorer.length_buckets):
        fast_slow(texts[0], *probe, k)  # Compiles this K's programs before the clock.
      ranks, seconds = [], []
      for i in range(len(texts)):
        start = time.perf_counter()
        order = fast_slow(texts[i], tokens[i:i + 1], mask[i:i + 1], k)
        seconds.append(time.perf_counter() - start)
        hits = np.flatnonzero(order == right[i])
        ranks.append(int(hits[0]) if len(hits) else max(fast_expected[i], k))
      add('Fast+Slow', recall.positions(np.asarray(ranks)), float(np.mean(seconds)), k=k)

    report = {'queries': len(texts), 'gallery': len(self.records), 'beta': rerank.beta,
              'slow_workdir': rerank.slow_workdir, 'slow_model': type(scorer.model).__name__,
              'slow_features': scorer.features,
              'slow_visual_bytes_per_image': int(visual[0].nbytes),
              'slow_visual_dtype': str(visual.dtype),
              'slow_storage': storage_comparison(scorer, self.records.images, tokens, mask),
              'rows': rows}
    if self.output_dir and jax.process_index() == 0:
      write_report(self.output_dir, report)
    evaluated = rows[1 if rerank.fast_workdir else 0]['name'].lower().replace(' ', '_')
    results.update({f't2i/R@{k}': results[f'{evaluated}/t2i/R@{k}'] for k in KS})
    results['num_texts'] = len(texts)
    return results


def exhaustive(scorer, tokens, mask, features, right):
  """Slow over the whole gallery for every query, at its fastest (`score_gallery`: queries
  in batches, each item's keys and values projected once per batch): (`recall.Ranks`,
  mean seconds per query). Compiled before the clock starts: on the longest queries,
  whose length bucket the whole call takes."""
  longest = np.argsort(-np.sum(mask > 0, axis=1), kind='stable')[:32]
  scorer.score_gallery(tokens[longest], mask[longest], features[:100])
  start = time.perf_counter()
  h = scorer.score_gallery(tokens, mask, features)
  seconds = (time.perf_counter() - start) / len(tokens)
  ranks = recall.ranks_of_rows(h, right)
  return ranks, seconds


def one_at_a_time(scored, tokens, mask):
  """Median seconds of one query scored alone against all of a gallery's features, for
  each (scorer, features) of `scored` (each compiled first, for each length bucket).
  Query by query the scorers take turns, so a shared machine's load falls on all alike
  and their ratios hold."""
  for scorer, features in scored:
    for probe in buckets_lib.length_probes(tokens, mask, scorer.length_buckets):
      scorer.score(*probe, features[None])
  seconds = [[] for _ in scored]
  for i in range(len(tokens)):
    for turn, (scorer, features) in enumerate(scored):
      start = time.perf_counter()
      scorer.score(tokens[i:i + 1], mask[i:i + 1], features[None])
      seconds[turn].append(time.perf_counter() - start)
  return [float(np.median(s)) for s in seconds]


def storage_comparison(scorer, images, tokens, mask):
  """For each kind of stored slow features the model supports (scorer.FEATURES): bytes
  per image, and the median time of one query scored alone against the first
  STORAGE_IMAGES images (the first FEATURE_TIMING_QUERIES queries, the kinds taking
  turns query by query), per query and per pair."""
  kinds = (scorer_lib.FEATURES if isinstance(scorer.model, capabilities.KeyValueScorer)
           else ('tokens',))
  count = min(FEATURE_TIMING_QUERIES, len(tokens))
  images = images[:STORAGE_IMAGES]
  scored = []
  for kind in kinds:
    variant = scorer_lib.SlowScorer(
        scorer.model, scorer.params, scorer.data_config, query_buckets=scorer.query_buckets,
        candidate_buckets=scorer.candidate_buckets, length_buckets=scorer.length_buckets,
        storage_dtype=scorer.storage_dtype, features=kind)
    scored.append((variant, variant.gallery_features(images)))
  times = one_at_a_time(scored, tokens[:count], mask[:count])
  return {kind: {'bytes_per_image': int(features[0].nbytes), 'queries': count,
                 'images': len(images), 'query_ms': 1000 * seconds,
                 'pair_us': 1e6 * seconds / len(images)}
          for kind, (_, features), seconds in zip(kinds, scored, times)}


def table(report):
  lines = ['| model | K | R@1 | R@5 | R@10 | mean query time (ms) |', '|---|---|---|---|---|---|']
  for row in report['rows']:
    lines.append(f'| {row["name"]} | {row["k"] or ""} | ' + ' | '.join(
        f'{100 * row[f"t2i/R@{k}"]:.1f}' for k in KS) + f' | {row["query_ms"]:.2f} |')
  return '\n'.join(lines)


def plot(report, path):
  # Imported here: matplotlib takes a second to import and only this report's plot needs it.
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use('Agg')
  from matplotlib import pyplot  # pylint: disable=import-outside-toplevel
  reranked = [r for r in report['rows'] if r['k']]
  others = [r for r in report['rows'] if not r['k']]
  figure, (left, right) = pyplot.subplots(1, 2, figsize=(10, 4))
  ks = [r['k'] for r in reranked]
  left.plot(ks, [100 * r['t2i/R@1'] for r in reranked], 'o-', label='Fast+Slow')
  right.plot(ks, [r['query_ms'] for r in reranked], 'o-', label='Fast+Slow')
  for row in others:
    left.axhline(100 * row['t2i/R@1'], linestyle='--', label=row['name'])
    right.axhline(row['query_ms'], linestyle='--', label=row['name'])
  left.set(xlabel='K (candidates re-ranked)', ylabel='text→image R@1 (%)', xscale='log')
  right.set(xlabel='K (candidates re-ranked)', ylabel='mean query time (ms)', xscale='log',
            yscale='log')
  for axis in (left, right):
    axis.legend(fontsize=8)
  figure.suptitle(f'{report["queries"]} queries, {report["gallery"]} images')
  figure.tight_layout()
  figure.savefig(path, dpi=100)
  pyplot.close(figure)


def write_report(output_dir, report):
  os.makedirs(output_dir, exist_ok=True)
  with open(os.path.join(output_dir, 'fast_slow.json'), 'w') as f:
    json.dump(report, f, indent=2)
  with open(os.path.join(output_dir, 'fast_slow.md'), 'w') as f:
    f.write(table(report) + '\n')
  plot(report, os.path.join(output_dir, 'fast_slow.png'))

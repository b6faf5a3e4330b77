"""The search service behind `--mode=serve`: model, index, micro-batcher, re-rank hook.

`SearchService` is independent of HTTP: `search(texts, k, rerank, ...)`,
`add_items(items)`, `delete_items(ids)`, `explain(query, image_id)` and `health()`
take and return plain
Python values and raise `errors.UserError` for bad input, which the server
turns into a 4xx. A query is a text, or an image (base64, or the id of a
gallery item) embedded by the image tower; a metadata filter narrows the
results to the items that pass it (`jaxret/index/metadata.py`); re-ranking
takes the largest candidate bucket whose measured cost fits `budget_ms`.
`from_workdir` assembles it from a trained workdir: the index, the checkpoint of the
step the index was built from (so training on in the same workdir does not change
what is served), the warmed-up text encoder,
and a check that this model made the index.

Searches look in one of two galleries, the request's `target`: 'images' (the
index; the default) or 'texts', the dataset's captions where `--mode=index`
indexed them (`index.texts`, `index/text_store.py`): an image query with
target 'texts' finds the nearest captions (image→text), each with the image it
describes. Text queries, filters and re-ranking search images.

A late-interaction workdir (FILIP, `index.token_dtype` set) is served as it was
trained: the pooled index gives a shortlist of `index.token_shortlist` items
and the token-wise score over the stored patch tokens re-ranks it
(`rerank/tokenwise.py`); results then carry `token_scores` next to the pooled
`fast_scores`. The token-wise order applies to text queries (it scores a
caption's words), filtered or not: a filter narrows the pooled shortlist, which
is then re-ordered token-wise. An image query is served in the pooled order.
With `rerank`, the slow re-ranker re-ranks the token-wise order's top
`rerank_k` (`fast_ids` is then that token-wise order, what rerank=0 returns);
the budget covers the slow re-ranker only.
"""

import base64
import binascii
import dataclasses
import io
import threading
import time
from typing import Any

import jax
import numpy as np
from PIL import Image

from jaxret import errors
from jaxret.index import store
from jaxret.index import text_store
from jaxret.parallel import mesh as mesh_lib
from jaxret.serve import batcher as batcher_lib
from jaxret.serve import encoder as encoder_lib
from jaxret.serve import explain as explain_lib
from jaxret.serve import gallery as gallery_lib
from jaxret.serve import rerank as rerank_lib
from jaxret.inference import restore as restore_lib
from jaxret.rerank import tokenwise as tokenwise_lib

REQUEST_TIMEOUT_S = 60


TARGETS = ('images', 'texts')  # The galleries a search can look in.


@dataclasses.dataclass(frozen=True)
class Query:
  """One request's queries for the batcher: tokenised texts or ready vectors, k, filter,
  and the gallery to search (one of `TARGETS`)."""
  prepared: np.ndarray | None  # (N, 2, L) tokens and mask, or None for `vectors`.
  vectors: np.ndarray | None  # (N, D) query embeddings (image queries).
  k: int
  passed: store.FilterMask | None  # The request's filter, or None.
  target: str = 'images'


@dataclasses.dataclass(frozen=True)
class Options:
  """Serving limits and batching; the defaults suit a small CPU server."""
  default_k: int = 10
  max_k: int = 1000
  max_queries_per_request: int = 256  # POST /search.
  max_items_per_request: int = 1024  # POST /items, DELETE /items.
  max_query_chars: int = encoder_lib.MAX_QUERY_CHARS
  micro_batch: int = 64  # Queries per model run and index search.
  max_wait_ms: float = 0.0  # Extra wait for company; 0: batch whatever is queued.
  batch_buckets: tuple = encoder_lib.BATCH_BUCKETS
  rerank_budget_ms: float = 0.0  # Default re-ranking budget; 0: the re-ranker's own K.


@dataclasses.dataclass(frozen=True)
class Pending:
  """A queued search: the batcher's future, and the function that makes the answer."""
  future: Any
  finish: Any


class SearchService:
  """Text search over an index, with micro-batched encoding and an optional re-ranker."""

  def __init__(self, index, text_encoder, *, model_step, gallery=None, image_encoder=None,
               reranker=None, options=Options(), warmup_seconds=0.0, tokenwise=None,
               explainers=(), texts=None):
    self.index = index
    self.texts = texts  # The indexed captions (`text_store.TextIndex`), or None.
    self.text_encoder = text_encoder
    self.model_step = model_step
    self.gallery = gallery
    self.image_encoder = image_encoder
    self.reranker = reranker
    self.tokenwise = tokenwise  # Token-wise re-ranking of a pooled shortlist (FILIP).
    self.explainers = tuple(explainers)
    self.options = options
    self.warmup_seconds = warmup_seconds
    self.started = time.time()
    self._write_lock = threading.Lock()
    self.batcher = batcher_lib.MicroBatcher(self._process, max_batch=options.micro_batch,
                                            max_wait_s=options.max_wait_ms / 1000)

  def close(self):
    self.batcher.close()

  # Searching.

  def gallery_size(self, target='images'):
    """Items in the gallery `target` names (the images' for any other name)."""
    return len(self.texts) if target == 'texts' and self.texts is not None else len(self.index)

  def check_k(self, k, target='images'):
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
      raise errors.UserError(f'k must be an integer, not {k!r}')
    size = self.gallery_size(target)
    limit = min(self.options.max_k, size)
    if not 1 <= k <= limit:
      what = 'captions' if target == 'texts' else 'images'
      raise errors.UserError(f'k={k} is out of range: use 1 <= k <= {limit} '
                             f'(the gallery has {size} {what})')

  def _process(self, items):
    """Micro-batch worker: one encoder run for all queued texts, one search per gallery for
    all unfiltered queries; each filtered request is searched with its own filter."""
    start = time.perf_counter()
    texts = [item.payload.prepared for item in items if item.payload.prepared is not None]
    text_vectors = self.text_encoder.embed(np.concatenate(texts)) if texts else None
    embeddings, row = [], 0
    for item in items:
      if item.payload.prepared is not None:
        embeddings.append(text_vectors[row:row + item.size])
        row += item.size
      else:
        embeddings.append(item.payload.vectors)
    encoded = time.perf_counter()
    found = {}
    for target, gallery in (('images', self.index), ('texts', self.texts)):
      plain = [i for i, item in enumerate(items)
               if item.payload.passed is None and item.payload.target == target]
      if not plain:
        continue
      k = min(max(items[i].payload.k for i in plain), len(gallery))
      ids, scores = gallery.search(np.concatenate([embeddings[i] for i in plain]), k)
      row = 0
      for i in plain:
        size, item_k = items[i].size, min(items[i].payload.k, k)
        found[i] = (ids[row:row + size, :item_k], scores[row:row + size, :item_k], None)
        row += size
    for i, item in enumerate(items):
      if item.payload.passed is not None:
        found[i] = self.index.search_filtered(embeddings[i], item.payload.k, item.payload.passed)
    searched = time.perf_counter()
    results = []
    for i, item in enumerate(items):
      timings = {'queue_ms': 1000 * (start - item.submitted),
                 'encode_ms': 1000 * (encoded - start),
                 'search_ms': 1000 * (searched - encoded),
                 'batch_queries': sum(entry.size for entry in items)}
      results.append(found[i] + (timings,))
    return results

  def rerank_k(self, budget_ms):
    """The candidates to re-rank: the largest bucket whose measured cost fits `budget_ms`
    (None: the service's default budget; 0: the re-ranker's own `num_candidates`)."""
    budget_ms = self.options.rerank_budget_ms if budget_ms is None else budget_ms
    if isinstance(budget_ms, bool) or not isinstance(budget_ms, (int, float)) or not (
        np.isfinite(budget_ms) and budget_ms >= 0):
      raise errors.UserError(f'rerank budget_ms must be a number >= 0, not {budget_ms!r}')
    if not budget_ms:
      return self.reranker.num_candidates
    costs = self.reranker.bucket_costs_ms
    fitting = [k for k, ms in costs.items() if ms <= budget_ms]
    if not fitting:
      cheapest = min(costs, key=costs.get)
      raise errors.UserError(f'no re-ranking bucket fits a budget of {budget_ms:g} ms: the '
                             f'cheapest, K={cheapest}, takes {costs[cheapest]:.1f} ms; raise '
                             'budget_ms or search with rerank=0')
    return max(fitting)

  def _query_vectors(self, image, image_id):
    """(1, D) query vector for an image query: a base64 image, or a gallery item's id."""
    if (image is None) == (image_id is None):
      raise errors.UserError('an image query takes exactly one of "image" (base64) or '
                             '"image_id"')
    if image_id is not None:
      (image_id,) = self.index.check_ids([image_id])
      vector = self.index.vector_of(image_id)
      return vector[None]
    if not isinstance(image, str):
      raise errors.UserError('"image" must be a base64-encoded PNG or JPEG string')
    return np.asarray(self.image_encoder.embed(self._decode_image('query', image)[None]),
                      np.float32)

  def search(self, texts=None, k=10, rerank=False, filter_expression=None, budget_ms=None,
             image=None, image_id=None, target='images'):
    """Top-k ids and scores for each text (or for one image query); with `rerank`,
    re-ordered by the re-ranker; with `filter_expression`, only items that pass it; with
    target 'texts' (an image query), the nearest indexed captions instead of images.

    Returns {'k', 'rerank', 'target', 'results': [{'query', 'ids', 'fast_scores'[,
    'token_scores', 'slow_scores', 'fast_ids', 'texts', 'image_ids']}], 'timings_ms',
    'model_step', 'index_size'[, 'shortlist', 'filter', 'rerank_k', 'rerank_budget_ms']};
    a caption's id is its row in the text index, and `image_ids` the images they describe.
    """
    pending = self.begin_search(texts, k, rerank, filter_expression, budget_ms, image,
                                image_id, target)
    return pending.finish(pending.future.result(timeout=REQUEST_TIMEOUT_S))

  def _check_target(self, target, image_query, filter_expression):
    if target not in TARGETS:
      raise errors.UserError(f'unknown target {target!r}: search "images" (the default) or '
                             '"texts"')
    if target == 'images':
      return
    if self.texts is None:
      raise errors.UserError('texts are not indexed in this workdir: run --mode=index, then '
                             '--mode=serve, with --config.index.texts=True to search captions')
    if not image_query:
      raise errors.UserError('target "texts" searches the indexed captions with an image '
                             'query ("image" or "image_id"); text queries search images')
    if filter_expression is not None:
      raise errors.UserError('a filter narrows images by their metadata; a search of texts '
                             'takes none')

  def begin_search(self, texts=None, k=10, rerank=False, filter_expression=None, budget_ms=None,
                   image=None, image_id=None, target='images'):
    """Checks a search (as `search`) and queues it: a `Pending` whose `future` gives the
    micro-batch's result and whose `finish(result)` makes the answer (re-ranking if asked),
    so that an asynchronous server can wait without holding a thread."""
    start = time.perf_counter()
    image_query = image is not None or image_id is not None
    if image_query:
      if texts is not None:
        raise errors.UserError('give either "queries" (texts) or an image query, not both')
      if rerank:
        raise errors.UserError('re-ranking scores texts against images: an image query '
                               'cannot be re-ranked; search with rerank=0')
    else:
      if not isinstance(texts, list) or not texts:
        raise errors.UserError('queries must be a non-empty list of strings')
      if len(texts) > self.options.max_queries_per_request:
        raise errors.UserError(f'{len(texts)} queries in one request; the limit is '
                               f'{self.options.max_queries_per_request}')
    self._check_target(target, image_query, filter_expression)
    self.check_k(k, target)
    if rerank and self.reranker is None:
      raise errors.UserError('this workdir has no re-ranker: search with rerank=0')
    num_candidates = self.rerank_k(budget_ms) if rerank else 0
    # FILIP's token-wise order scores text tokens: it re-orders text queries' shortlists.
    tokenwise = self.tokenwise is not None and not image_query
    if budget_ms is not None and not rerank:
      raise errors.UserError('budget_ms applies to re-ranking: add rerank=1')
    passed = None
    if filter_expression is not None:
      passed = self.index.filter_mask(filter_expression)
    if image_query:
      query = Query(None, self._query_vectors(image, image_id), k, passed, target)
      labels = [{'image_id': image_id} if image_id is not None else {'image': 'uploaded'}]
    else:
      prepared = self.text_encoder.prepare(texts)
      fast_k = max(k, num_candidates)
      if tokenwise:
        fast_k = max(fast_k, self.tokenwise.num_candidates)
      fast_k = min(fast_k, len(self.index))
      query = Query(prepared, None, fast_k, passed)
      labels = texts
    future = self.batcher.submit(query, size=len(labels))

    def finish(result):
      ids, scores, filtered, timings = result
      fetched = time.perf_counter()
      results = []
      for label, hit_ids, fast in zip(labels, ids, scores):
        entry = {'query': label}
        if tokenwise:
          hit_ids, fast, entry['token_scores'] = self._tokenwise_order(
              label, hit_ids, fast, max(k, num_candidates))
        if rerank:
          entry['fast_ids'] = hit_ids[:k].tolist()
          scores = self.reranker(label, hit_ids.tolist(), fast)
          final, slow = scores if isinstance(scores, tuple) else (scores, scores)
          final, slow = np.asarray(final, np.float32), np.asarray(slow, np.float32)
          order = np.argsort(-final, kind='stable')[:k]
          hit_ids, fast = hit_ids[order], fast[order]
          entry['slow_scores'] = slow[order].tolist()
          if tokenwise:
            entry['token_scores'] = [entry['token_scores'][i] for i in order]
          if isinstance(scores, tuple):
            entry['final_scores'] = final[order].tolist()
        entry['ids'] = hit_ids.tolist()
        entry['fast_scores'] = fast.tolist()
        if target == 'texts':
          entry['texts'], entry['image_ids'] = self.texts.captions(hit_ids)
        results.append(entry)
      end = time.perf_counter()
      found = {'k': k, 'rerank': bool(rerank), 'target': target, 'results': results}
      if rerank or tokenwise:
        timings['rerank_ms'] = 1000 * (end - fetched)
      if tokenwise:
        found['shortlist'] = fast_k
      if rerank:
        found['rerank_k'] = min(max(k, num_candidates), len(self.index))
        found['rerank_budget_ms'] = (self.options.rerank_budget_ms if budget_ms is None
                                     else budget_ms) or None
      if passed is not None:
        found['filter'] = filtered
      timings['total_ms'] = 1000 * (end - start)
      found.update(timings_ms={name: round(value, 3) for name, value in timings.items()},
                   model_step=self.model_step, index_size=len(self.index))
      return found

    return Pending(future, finish)

  def _tokenwise_order(self, text, hit_ids, fast, keep):
    """The shortlist re-ordered by the token-wise score, cut to `keep`: (ids, pooled scores,
    token-wise scores as a list)."""
    token_scores = np.asarray(self.tokenwise(text, hit_ids.tolist(), fast), np.float32)
    order = np.argsort(-token_scores, kind='stable')[:keep]
    return hit_ids[order], fast[order], token_scores[order].tolist()

  # Explaining a result.

  def explain(self, query, image_id):
    """Per-word heatmaps over gallery image `image_id` for `query`, one per scorer
    (`serve/explain.py`); refuses an id not in the gallery."""
    encoder_lib.check_text(query, self.options.max_query_chars)
    if not self.explainers:
      raise errors.UserError('this workdir has no scorer that explains results (a '
                             'late-interaction model with index.token_dtype set, or a slow '
                             'captioner or ALBEF as rerank.slow_workdir)')
    image_id = self.index.check_ids([image_id])[0]
    if image_id not in self.index:
      raise errors.UserError(f'image id {image_id!r} is not in the gallery')
    image_size = None if self.image_encoder is None else self.image_encoder.image_size
    return explain_lib.explain(self.explainers, query, image_id, image_size)

  # Changing the gallery.

  def _decode_image(self, image_id, encoded):
    if self.image_encoder is None:
      raise errors.UserError('this server cannot embed images; send "embedding" instead')
    try:
      data = base64.b64decode(encoded, validate=True)
      with Image.open(io.BytesIO(data)) as image:
        image = image.convert('RGB')
    except (binascii.Error, ValueError, OSError, Image.DecompressionBombError) as e:
      raise errors.UserError(f'image for id {image_id!r} is not a base64-encoded PNG or JPEG '
                             f'({type(e).__name__})') from None
    size = self.image_encoder.image_size
    return np.asarray(image.resize((size, size), Image.BILINEAR), np.uint8)

  def add_items(self, items):
    """Adds (or replaces) items: [{'id': ..., 'embedding': [...]} or {'id': ..., 'image': b64},
    each with optional 'metadata': {field: string, number or date}].

    An image is embedded with the model's image tower and kept for thumbnails;
    an embedding is indexed as given (it must be L2-normalised like the rest).
    """
    if not isinstance(items, list) or not items:
      raise errors.UserError('items must be a non-empty list of {"id", "embedding" or "image"}')
    if len(items) > self.options.max_items_per_request:
      raise errors.UserError(f'{len(items)} items in one request; the limit is '
                             f'{self.options.max_items_per_request}')
    for position, item in enumerate(items):
      if not isinstance(item, dict) or 'id' not in item or (('embedding' in item)
                                                             == ('image' in item)):
        raise errors.UserError(f'item {position} must be an object with "id" and exactly one of '
                               '"embedding" or "image"')
      unknown = sorted(set(item) - {'id', 'embedding', 'image', 'metadata'})
      if unknown:
        raise errors.UserError(f'item {position} has unknown keys {unknown}; known: id, '
                               'embedding, image, metadata')
    ids = self.index.check_ids([item['id'] for item in items])
    vectors, images = [None] * len(items), {}
    for position, item in enumerate(items):
      if 'embedding' in item and self.tokenwise is not None:
        raise errors.UserError(f'item {position}: this index re-ranks by patch tokens, which an '
                               'embedding lacks; send "image" instead')
      if 'image' in item:
        images[position] = self._decode_image(item['id'], item['image'])
      else:
        vector = item['embedding']
        if not isinstance(vector, list) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in vector):
          raise errors.UserError(f'embedding of item {position} must be a list of numbers')
        vectors[position] = vector
    if images:
      embedded = self.image_encoder.embed(np.stack(list(images.values())))
      for position, vector in zip(images, embedded):
        vectors[position] = vector
    dim = self.index.manifest['embedding_dim']
    if any(len(v) != dim for v in vectors):
      raise errors.UserError(f'embeddings must have {dim} numbers')
    with self._write_lock:
      if self.tokenwise is not None:
        tokens = self.tokenwise.token_store
        tokens.upsert([ids[p] for p in images],
                      self.tokenwise.scorer.image_tokens(np.stack(list(images.values()))))
      self.index.upsert(ids, np.asarray(vectors, np.float32),
                        [item.get('metadata') for item in items])
      if self.tokenwise is not None:
        self.tokenwise.token_store.save()
      if self.gallery is not None:
        for position, image_id in enumerate(ids):
          if position in images:
            self.gallery.add(image_id, images[position])
          else:
            self.gallery.remove(image_id)  # A stale picture of an old embedding.
      manifest = self.index.save()
    return {'added_or_updated': len(ids), 'num_items': manifest['num_items']}

  def delete_items(self, ids):
    if not isinstance(ids, list) or not ids:
      raise errors.UserError('ids must be a non-empty list of image ids')
    if len(ids) > self.options.max_items_per_request:
      raise errors.UserError(f'{len(ids)} ids in one request; the limit is '
                             f'{self.options.max_items_per_request}')
    ids = self.index.check_ids(ids)
    with self._write_lock:
      deleted = self.index.delete(ids)
      manifest = self.index.save()
      if self.tokenwise is not None:
        self.tokenwise.token_store.delete(ids)
        self.tokenwise.token_store.save()
      if self.gallery is not None:
        for image_id in ids:
          self.gallery.remove(image_id)
    return {'deleted': deleted, 'num_items': manifest['num_items']}

  def health(self):
    stats = self.batcher.stats
    return {
        'status': 'ok',
        'model_step': self.model_step,
        'num_items': len(self.index),
        'embedding_dim': self.index.manifest['embedding_dim'],
        'index_method': self.index.manifest['build_params']['method'],
        'changes_since_build': self.index.manifest['changes_since_build'],
        'reranker': None if self.reranker is None else self.reranker.name,
        'rerank_bucket_costs_ms': None if self.reranker is None else {
            str(k): round(ms, 3) for k, ms in self.reranker.bucket_costs_ms.items()},
        'metadata_fields': dict(self.index.metadata.types),
        'texts': None if self.texts is None else len(self.texts),
        'tokenwise': None if self.tokenwise is None else {
            'shortlist': self.tokenwise.num_candidates,
            'dtype': self.tokenwise.token_store.manifest['dtype']},
        'explainers': [explainer.name for explainer in self.explainers],
        'uptime_s': round(time.time() - self.started, 3),
        'warmup_s': round(self.warmup_seconds, 3),
        'batches': stats.batches,
        'queries': stats.queries,
        'largest_batch': stats.largest_batch,
    }


def from_workdir(config, workdir, options=Options()):
  """The service for the index in `workdir` and the checkpoint it was built from."""
  options = dataclasses.replace(options, rerank_budget_ms=float(config.rerank.budget_ms))
  index = store.load(store.directory(workdir), expected_dim=config.model.embed_dim)
  step = index.manifest['model_step']
  # One device: a query batch is small, and one device keeps latency low.
  mesh = mesh_lib.make_mesh(devices=jax.local_devices()[:1])
  try:
    restored = restore_lib.restore(config, workdir, step, mesh=mesh)
  except errors.UserError as e:
    raise errors.UserError(f'the index was built from checkpoint step {step}, which cannot be '
                           f'restored ({e}); re-export and re-index: --mode=export then '
                           '--mode=index') from None
  text_encoder = encoder_lib.TextEncoder(restored.model, restored.params, restored.tokenizer,
                                         options.batch_buckets, options.max_query_chars)
  warmup_seconds = text_encoder.warm_up()
  store.check_model(index, text_encoder.embed_texts)
  split = index.manifest.get('split') or config.export.split
  gallery = gallery_lib.for_workdir(config, workdir, split)
  image_encoder = encoder_lib.ImageEncoder(restored.model, restored.params, config.data)
  tokenwise = tokenwise_lib.for_workdir(config, workdir, restored, step)
  reranker = rerank_lib.for_workdir(config, workdir)
  explainers = explain_lib.for_service(tokenwise, reranker)
  texts = None
  if config.index.texts:
    texts = text_store.load(text_store.directory(workdir), step, config.model.embed_dim)
  return SearchService(index, text_encoder, model_step=restored.step, gallery=gallery,
                       image_encoder=image_encoder, reranker=reranker,
                       options=options, warmup_seconds=warmup_seconds, tokenwise=tokenwise,
                       explainers=explainers, texts=texts)

"""The search service behind `--mode=serve`: model, index, micro-batcher, re-rank hook.

`SearchService` is independent of HTTP: `search(texts, k, rerank)`,
`add_items(items)`, `delete_items(ids)`, `explain(query, image_id)` and `health()`
take and return plain
Python values and raise `errors.UserError` for bad input, which the server
turns into a 4xx. `from_workdir` assembles it from a trained workdir: the
index, the checkpoint of the step the index was built from (so training on in
the same workdir does not change what is served), the warmed-up text encoder,
and a check that this model made the index.

A late-interaction workdir (FILIP, `index.token_dtype` set) is served as it was
trained: the pooled index gives a shortlist of `index.token_shortlist` items
and the token-wise score over the stored patch tokens re-ranks it
(`rerank/tokenwise.py`); results then carry `token_scores` next to the pooled
`fast_scores`.
"""

import base64
import binascii
import dataclasses
import io
import os
import threading
import time

import jax
import numpy as np
from PIL import Image

from jaxret import errors
from jaxret.data import sources
from jaxret.index import store
from jaxret.parallel import mesh as mesh_lib
from jaxret.serve import batcher as batcher_lib
from jaxret.serve import encoder as encoder_lib
from jaxret.serve import explain as explain_lib
from jaxret.serve import gallery as gallery_lib
from jaxret.serve import rerank as rerank_lib
from jaxret.inference import restore as restore_lib
from jaxret.rerank import tokenwise as tokenwise_lib

REQUEST_TIMEOUT_S = 60


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


class SearchService:
  """Text search over an index, with micro-batched encoding and an optional re-ranker."""

  def __init__(self, index, text_encoder, *, model_step, gallery=None, image_encoder=None,
               reranker=None, options=Options(), warmup_seconds=0.0, tokenwise=None,
               explainers=()):
    self.index = index
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

  def check_k(self, k):
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
      raise errors.UserError(f'k must be an integer, not {k!r}')
    limit = min(self.options.max_k, len(self.index))
    if not 1 <= k <= limit:
      raise errors.UserError(f'k={k} is out of range: use 1 <= k <= {limit} '
                             f'(the gallery has {len(self.index)} images)')

  def _process(self, items):
    """Micro-batch worker: one encoder run and one index search for all queued queries."""
    start = time.perf_counter()
    prepared = np.concatenate([item.payload[0] for item in items])
    embeddings = self.text_encoder.embed(prepared)
    encoded = time.perf_counter()
    k = min(max(item.payload[1] for item in items), len(self.index))
    ids, scores = self.index.search(embeddings, k)
    searched = time.perf_counter()
    results, row = [], 0
    for item in items:
      item_k = min(item.payload[1], k)
      timings = {'queue_ms': 1000 * (start - item.submitted),
                 'encode_ms': 1000 * (encoded - start),
                 'search_ms': 1000 * (searched - encoded),
                 'batch_queries': len(prepared)}
      results.append((ids[row:row + item.size, :item_k], scores[row:row + item.size, :item_k],
                      timings))
      row += item.size
    return results

  def search(self, texts, k, rerank=False):
    """Top-k ids and scores for each text; with `rerank`, re-ordered by the re-ranker.

    Returns {'k', 'rerank', 'results': [{'query', 'ids', 'fast_scores'[, 'slow_scores']}],
    'timings_ms', 'model_step', 'index_size'}.
    """
    start = time.perf_counter()
    if not isinstance(texts, list) or not texts:
      raise errors.UserError('queries must be a non-empty list of strings')
    if len(texts) > self.options.max_queries_per_request:
      raise errors.UserError(f'{len(texts)} queries in one request; the limit is '
                             f'{self.options.max_queries_per_request}')
    self.check_k(k)
    if rerank and self.reranker is None:
      raise errors.UserError('this workdir has no re-ranker: search with rerank=0')
    prepared = self.text_encoder.prepare(texts)
    fast_k = max(k, self.reranker.num_candidates) if rerank else k
    if self.tokenwise is not None:
      fast_k = max(fast_k, self.tokenwise.num_candidates)
    future = self.batcher.submit((prepared, min(fast_k, len(self.index))), size=len(texts))
    ids, scores, timings = future.result(timeout=REQUEST_TIMEOUT_S)
    fetched = time.perf_counter()
    results = []
    for text, hit_ids, fast in zip(texts, ids, scores):
      entry = {'query': text}
      if self.tokenwise is not None:
        hit_ids, fast, entry['token_scores'] = self._tokenwise_order(
            text, hit_ids, fast, max(k, self.reranker.num_candidates) if rerank else k)
      if rerank:
        scores = self.reranker(text, hit_ids.tolist(), fast)
        final, slow = scores if isinstance(scores, tuple) else (scores, scores)
        final, slow = np.asarray(final, np.float32), np.asarray(slow, np.float32)
        order = np.argsort(-final, kind='stable')[:k]
        hit_ids, fast = hit_ids[order], fast[order]
        entry['slow_scores'] = slow[order].tolist()
        if 'token_scores' in entry:
          entry['token_scores'] = [entry['token_scores'][i] for i in order]
        if isinstance(scores, tuple):
          entry['final_scores'] = final[order].tolist()
      entry['ids'] = hit_ids.tolist()
      entry['fast_scores'] = fast.tolist()
      results.append(entry)
    end = time.perf_counter()
    if rerank or self.tokenwise is not None:
      timings['rerank_ms'] = 1000 * (end - fetched)
    timings['total_ms'] = 1000 * (end - start)
    return {'k': k, 'rerank': bool(rerank), 'results': results,
            'timings_ms': {name: round(value, 3) for name, value in timings.items()},
            'model_step': self.model_step, 'index_size': len(self.index),
            **({} if self.tokenwise is None else
               {'shortlist': min(fast_k, len(self.index))})}

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
    """Adds (or replaces) items: [{'id': ..., 'embedding': [...]} or {'id': ..., 'image': b64}].

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
      self.index.upsert(ids, np.asarray(vectors, np.float32))
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
  gallery = gallery_lib.Gallery(lambda: sources.load_split(config.data, split),
                                os.path.join(workdir, 'gallery', 'added'))
  image_encoder = encoder_lib.ImageEncoder(restored.model, restored.params, config.data)
  tokenwise = tokenwise_lib.for_workdir(config, workdir, restored, step)
  reranker = rerank_lib.for_workdir(config, workdir)
  explainers = explain_lib.for_service(tokenwise, reranker)
  return SearchService(index, text_encoder, model_step=restored.step, gallery=gallery,
                       image_encoder=image_encoder, reranker=reranker,
                       options=options, warmup_seconds=warmup_seconds, tokenwise=tokenwise,
                       explainers=explainers)

"""h(x, y) of the slow model for batches of queries against candidate images, jit-compiled
once per (queries, candidates, caption length) bucket."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxret import errors
from jaxret.models import capabilities
from jaxret.rerank import buckets as buckets_lib


# What the gallery stores per image for the slow model (`rerank.features`): its visual
# tokens, or the decoders' cross-attention keys and values of them (no projection
# at query time, 4 × depth × the bytes for two decoders).
FEATURES = ('tokens', 'keys_values')


class SlowScorer(buckets_lib.BucketedScorer):
  """Scores captions against precomputed visual tokens with a `capabilities.PairScorer`.

  `gallery_features(images)` runs the image side once per gallery image (stored in
  `storage_dtype`, e.g. bfloat16: `features` says which: see FEATURES);
  `score(tokens, mask, features)` runs only the
  text side (the captioner's decoders, ALBEF's fusion encoder), for Q queries
  against K candidates each, padded to buckets so that queries of one bucket
  reuse one compiled program (`compilations` counts them).
  """

  def __init__(self, model, params, data_config, *, query_buckets=(1, 8, 32),
               candidate_buckets=(10, 50, 100), length_buckets=(8, 16, 32),
               image_batch=64, storage_dtype='float32', features='tokens'):
    capabilities.require(model, capabilities.PairScorer, 'slow scoring (re-ranking)')
    if features not in FEATURES:
      raise errors.UserError(f'unknown rerank.features {features!r}; known: {", ".join(FEATURES)}')
    if features == 'keys_values':
      capabilities.require(model, capabilities.KeyValueScorer, 'rerank.features=keys_values')
    super().__init__(params, data_config, image_batch=image_batch,
                     candidate_buckets=candidate_buckets, length_buckets=length_buckets)
    self.features = features
    self.model = model
    self.query_buckets = tuple(query_buckets)
    self.storage_dtype = jnp.dtype(storage_dtype)
    self._visual = jax.jit(lambda p, images: model.apply(
        {'params': p}, images, method=model.visual_tokens))
    self._keys_values = jax.jit(lambda p, images: model.apply(
        {'params': p}, model.apply({'params': p}, images, method=model.visual_tokens),
        method=model.keys_values))
    self._score = jax.jit(self._score_pairs)
    self._score_grid = jax.jit(self._score_grid_pairs)

  def visual_tokens(self, images):
    """uint8 (N, H, W, 3) -> (N, tokens, width) numpy in the storage dtype."""
    return self._per_image(self._visual, images)

  def gallery_features(self, images):
    """What `score` reads per image (`features`): the visual tokens (N, tokens, width), or
    the decoders' cross-attention keys and values (N, ...), in the storage dtype."""
    return self._per_image(self._visual if self.features == 'tokens' else self._keys_values,
                           images)

  def _per_image(self, function, images):
    return self.encode_images(
        lambda normalised: function(self.params, normalised).astype(self.storage_dtype), images)

  def _score_pairs(self, params, tokens, mask, visual):
    self.compilations += 1  # Runs only while tracing, i.e. once per compiled shape.
    queries, candidates = visual.shape[:2]
    pair_tokens = jnp.repeat(tokens, candidates, axis=0)
    pair_mask = jnp.repeat(mask, candidates, axis=0)
    pair_visual = visual.reshape(queries * candidates, *visual.shape[2:]).astype(jnp.float32)
    method = self.model.score if self.features == 'tokens' else self.model.score_keys_values
    scores = self.model.apply({'params': params}, pair_visual, pair_tokens, pair_mask,
                              method=method)
    return scores.reshape(queries, candidates)

  def _score_grid_pairs(self, params, tokens, mask, features):
    self.compilations += 1
    items = features.shape[0]
    method = self.model.score if self.features == 'tokens' else self.model.score_keys_values
    features = features.astype(jnp.float32)

    def one_query(query_tokens, query_mask):  # Against every item of the chunk.
      return self.model.apply({'params': params}, features,
                              jnp.broadcast_to(query_tokens, (items, *query_tokens.shape)),
                              jnp.broadcast_to(query_mask, (items, *query_mask.shape)),
                              method=method)

    # `features` is not mapped over, so vmap leaves what depends on it alone (the keys
    # and values of the items) computed once, shared by every query of the call.
    return jax.vmap(one_query)(tokens, mask)

  def score_gallery(self, tokens, mask, features, *, query_batch=32, gallery_chunk=100):
    """h of every caption (tokens, mask: (Q, L)) against every gallery item (features:
    (N, ...), `gallery_features`): (Q, N). Exhaustive Slow at its fastest: `query_batch`
    captions meet `gallery_chunk` items per call, and each item's cross-attention keys and
    values are projected once per call however many captions read them (vmap over the
    captions only), so stored tokens cost about what stored keys and values do."""
    tokens, mask = buckets_lib.trim_length(np.asarray(tokens), np.asarray(mask),
                                           self.length_buckets)
    num_queries, num_items = len(tokens), len(features)
    # Equal calls, so that padding the last one wastes little: 50 queries go as 2 x 25.
    q = -(-num_queries // -(-num_queries // query_batch))
    c = -(-num_items // -(-num_items // gallery_chunk))
    results = np.zeros((num_queries, num_items), np.float32)
    for q0 in range(0, num_queries, q):
      part_tokens = buckets_lib.pad_rows(tokens[q0:q0 + q], q)
      part_mask = buckets_lib.pad_rows(mask[q0:q0 + q], q)
      rows = min(q, num_queries - q0)
      for c0 in range(0, num_items, c):
        cols = min(c, num_items - c0)
        scores = self._score_grid(self.params, part_tokens, part_mask,
                                  buckets_lib.pad_rows(features[c0:c0 + c], c))
        results[q0:q0 + rows, c0:c0 + cols] = np.asarray(scores)[:rows, :cols]
    return results

  def score(self, tokens, mask, visual):
    """h for Q captions (tokens, mask: (Q, L)) against their K candidates' features
    (Q, K, ...: `gallery_features`)."""
    num_queries, num_candidates = visual.shape[:2]
    tokens, mask = buckets_lib.trim_length(np.asarray(tokens), np.asarray(mask),
                                           self.length_buckets)
    q = buckets_lib.bucket(num_queries, self.query_buckets)
    k = buckets_lib.bucket(num_candidates, self.candidate_buckets)
    results = np.zeros((num_queries, num_candidates), np.float32)
    for q0 in range(0, num_queries, q):  # More queries or candidates than the largest
      for k0 in range(0, num_candidates, k):  # bucket: several calls of that bucket.
        part = visual[q0:q0 + q, k0:k0 + k]
        rows, cols = part.shape[:2]
        part = np.stack([buckets_lib.pad_rows(row, k) for row in part])
        scores = self._score(self.params, buckets_lib.pad_rows(tokens[q0:q0 + q], q),
                             buckets_lib.pad_rows(mask[q0:q0 + q], q),
                             buckets_lib.pad_rows(part, q))
        results[q0:q0 + rows, k0:k0 + cols] = np.asarray(scores)[:rows, :cols]
    return results

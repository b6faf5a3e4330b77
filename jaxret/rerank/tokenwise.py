"""FILIP served as trained: the pooled index shortlists, the token-wise score re-ranks.

A query's text tokens (`capabilities.TokenEncoder.encode_text_tokens`) are
scored against the stored patch tokens of its shortlist
(`jaxret/index/token_store.py`) with the text→image late-interaction score the
model was trained and evaluated with (`losses/filip.text_to_image_similarity`):
the mean over real words of each word's best patch. Both programs are
jit-compiled once per (caption length, candidate) bucket, as the slow scorer
is (`rerank/scorer.py`).
"""

import jax
import jax.numpy as jnp
import numpy as np

from jaxret.index import token_store
from jaxret.losses import filip
from jaxret.models import capabilities
from jaxret.rerank import buckets as buckets_lib


class TokenwiseScorer(buckets_lib.BucketedScorer):
  """Text tokens of queries, and their token-wise scores against candidates' patch tokens."""

  def __init__(self, model, params, data_config, *, candidate_buckets, length_buckets,
               image_batch=8):
    capabilities.require(model, capabilities.TokenEncoder, 'token-wise serving (FILIP)')
    super().__init__(params, data_config, image_batch=image_batch,
                     candidate_buckets=candidate_buckets, length_buckets=length_buckets)
    self._text_tokens = jax.jit(lambda p, tokens, mask: model.apply(
        {'params': p}, tokens, mask, method=model.encode_text_tokens)[0])
    self._image_tokens = jax.jit(lambda p, images: model.apply(
        {'params': p}, images, method=model.encode_image_tokens)[0])
    self._score = jax.jit(self._score_candidates)

  def image_tokens(self, images):
    """uint8 (N, H, W, 3) -> (N, P, D) float32 unit patch vectors (for added items)."""
    return self.encode_images(
        lambda normalised: np.asarray(self._image_tokens(self.params, normalised), np.float32),
        images)

  def text_tokens(self, tokens, mask):
    """(Q, L) tokens and mask -> ((Q, L', D) unit vectors, (Q, L') mask), L' a length bucket."""
    tokens, mask = buckets_lib.trim_length(np.asarray(tokens), np.asarray(mask),
                                           self.length_buckets)
    return np.asarray(self._text_tokens(self.params, tokens, mask)), mask

  def _score_candidates(self, text_tokens, text_mask, patch_tokens):
    self.compilations += 1  # Runs only while tracing, i.e. once per compiled shape.
    return filip.text_to_image_similarity(text_tokens[None], text_mask[None], patch_tokens)[0]

  def score(self, text_tokens, text_mask, patch_tokens):
    """(K,) token-wise scores of one query's (L, D) tokens against (K, P, D) candidates."""
    size = buckets_lib.bucket(len(patch_tokens), self.candidate_buckets)
    results = []
    for start in range(0, len(patch_tokens), size):
      part = patch_tokens[start:start + size]
      scores = self._score(text_tokens, text_mask, buckets_lib.pad_rows(part, size))
      results.append(np.asarray(scores)[:len(part)])
    return np.concatenate(results)



class TokenwiseReranker:
  """The serving hook (`jaxret/serve/rerank.py`'s protocol): a query, its pooled shortlist
  (ids, best first) and their pooled scores -> the token-wise scores of the shortlist."""
  name = 'filip token-wise'

  def __init__(self, scorer, tokenizer, token_store, *, shortlist):
    self.scorer = scorer
    self.tokenizer = tokenizer
    self.token_store = token_store
    self.num_candidates = shortlist

  def query_tokens(self, query):
    tokens, mask = self.tokenizer.encode([query])
    text_tokens, mask = self.scorer.text_tokens(tokens, mask)
    return text_tokens[0], mask[0]

  def __call__(self, query, candidate_ids, fast_scores):
    del fast_scores  # The token-wise score replaces the pooled one.
    text_tokens, mask = self.query_tokens(query)
    return self.scorer.score(text_tokens, mask, self.token_store.tokens(list(candidate_ids)))

  def word_patch_similarity(self, query, image_id):
    """((L, P) cosine similarity of each real query token with each patch of `image_id`,
    the query's token strings): the word–patch alignment of FILIP's figure; the mean over
    words of each row's max is the token-wise score."""
    text_tokens, mask = self.query_tokens(query)
    real = mask > 0
    patches = self.token_store.tokens([image_id])[0]
    similarity = np.asarray(text_tokens, np.float32)[real] @ patches.T
    words = self.tokenizer.backend.encode(query).tokens[:int(real.sum())]
    return similarity, words

  def warm_up(self):
    """Compiles every (length, candidate) bucket; returns nothing."""
    dim = self.token_store.manifest['dim']
    patches = self.token_store.manifest['tokens']
    for length in self.scorer.length_buckets:
      tokens = np.zeros((1, length), np.int32)
      mask = np.ones((1, length), np.int32)
      text_tokens, mask = self.scorer.text_tokens(tokens, mask)
      for size in self.scorer.candidate_buckets:
        jax.block_until_ready(self.scorer._score(  # pylint: disable=protected-access
            text_tokens[0], mask[0], jnp.zeros((size, patches, dim), jnp.float32)))


def for_workdir(config, workdir, restored, index_step):
  """The workdir's token-wise re-ranker when its config stores patch tokens
  (`index.token_dtype`; '': None), over the tokens `--mode=index` stored from the
  index's checkpoint; compiled for every bucket."""
  if not config.index.token_dtype:
    return None
  tokens = token_store.load(token_store.directory(workdir), expected_step=index_step)
  # The longest caption is a bucket too, so that trimming never cuts a real token.
  max_len = restored.tokenizer.max_len
  lengths = tuple(b for b in config.rerank.length_buckets if b < max_len) + (max_len,)
  scorer = TokenwiseScorer(restored.model, restored.params, config.data,
                           candidate_buckets=config.index.token_candidate_buckets,
                           length_buckets=lengths)
  reranker = TokenwiseReranker(scorer, restored.tokenizer, tokens,
                               shortlist=config.index.token_shortlist)
  reranker.warm_up()
  return reranker

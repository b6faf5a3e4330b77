"""The retrieval evaluator: embeds a split and scores Recall@K by image id."""

import numpy as np

from jaxret.evaluate import embed
from jaxret.evaluate import recall


def embed_split(embedder, params, records, tokenizer):
  """All images and captions of `records`: (image_emb, text_emb, text_image_ids, texts)."""
  image_index, texts = records.pairs()
  tokens, mask = tokenizer.encode(texts)
  image_emb = embedder.images(params, records.images)
  text_emb = embedder.texts(params, tokens, mask)
  return image_emb, text_emb, np.asarray(records.image_ids)[image_index], texts


class RetrievalEvaluator:
  """Text→image and image→text Recall@K on one split."""

  def __init__(self, model, mesh, records, tokenizer, config, output_dir=None):
    del output_dir
    self.records = records
    self.tokenizer = tokenizer
    self.embedder = embed.Embedder(model, mesh, config.eval.batch_size, config.data)

  def __call__(self, params):
    image_emb, text_emb, text_image_ids, _ = embed_split(
        self.embedder, params, self.records, self.tokenizer)
    return recall.retrieval_metrics(image_emb, self.records.image_ids, text_emb, text_image_ids)

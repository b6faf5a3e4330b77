"""The retrieval evaluator: embeds a split and scores Recall@K by image id.

How items are scored depends on the model and the task:
  - a `capabilities.PooledEncoder` (every retrieval model): dot products of the
    unit vectors `encode_image` and `encode_text` give;
  - a `capabilities.TokenEncoder` too (late interaction, FILIP): token-wise
    scores of `encode_image_tokens` and `encode_text_tokens` over the whole
    gallery (`losses/filip.py`), one score matrix per direction; the pooled
    vectors, which export and the index use, are scored too (`pooled/...`);
  - `config.eval.task = 'image_image'` (IRT's image retrieval): image→image
    Recall@K by label on several renderings of each scene
    (`evaluate/image_retrieval.py`), in addition to the text metrics (which
    the trainer's log line expects; a model trained on images alone scores
    near chance there).
"""

import numpy as np

from jaxret import errors
from jaxret.evaluate import base
from jaxret.evaluate import embed
from jaxret.evaluate import image_retrieval
from jaxret.evaluate import recall
from jaxret.losses import filip
from jaxret.models import capabilities

TASKS = ('text_image', 'image_image')


def task_of(config):
  """`config.eval.task`, checked."""
  task = config.eval.task
  if task not in TASKS:
    raise errors.UserError(f'unknown eval.task {task!r}; known: {", ".join(TASKS)}')
  return task


def embed_split(embedder, params, records, tokenizer):
  """All images and captions of `records`: (image_emb, text_emb, text_image_ids, texts)."""
  image_index, texts = records.pairs()
  tokens, mask = tokenizer.encode(texts)
  image_emb = embedder.images(params, records.images)
  text_emb = embedder.texts(params, tokens, mask)
  return image_emb, text_emb, np.asarray(records.image_ids)[image_index], texts


class RetrievalEvaluator(base.Evaluator):
  """Recall@K on one split: text→image and image→text, and for the image task
  also image→image by label (`i2i/...`).

  `split` names the records' split for the image task (default: the config's
  periodic split, which is what the trainer evaluates on). Writes no files.
  """
  requires = (capabilities.PooledEncoder,)

  def __init__(self, model, mesh, records, tokenizer, config, split=None, output_dir=None):
    del output_dir
    self.records = records
    self.tokenizer = tokenizer
    self.embedder = embed.Embedder(model, mesh, config.eval.batch_size, config.data)
    self.token_embedder = None
    if isinstance(model, capabilities.TokenEncoder):
      self.token_embedder = embed.Embedder(model, mesh, config.eval.batch_size, config.data,
                                           per_token=True)
    self.image_task = None
    if task_of(config) == 'image_image':
      self.image_task = image_retrieval.ImageRetrievalEvaluator(
          model, mesh, config, split or config.eval.periodic_split, records)

  def summary(self):
    """Counts for the results file: images, captions, chance R@1."""
    counts = {'num_images': len(self.records),
              'num_texts': sum(map(len, self.records.captions)),
              'chance_t2i_R1': 1 / len(self.records)}
    if self.image_task is not None:
      counts.update(self.image_task.summary())
    return counts

  def __call__(self, params):
    image_emb, text_emb, text_image_ids, texts = embed_split(
        self.embedder, params, self.records, self.tokenizer)
    results = recall.retrieval_metrics(image_emb, self.records.image_ids, text_emb,
                                       text_image_ids)
    if self.token_embedder is not None:
      tokens, mask = self.tokenizer.encode(texts)
      t2i, i2t = filip.late_interaction_scores(
          self.token_embedder.images(params, self.records.images),
          self.token_embedder.texts(params, tokens, mask), np.asarray(mask))
      pooled = {f'pooled/{k}': v for k, v in results.items()}
      results = {**recall.metrics_from_scores(t2i, self.records.image_ids, text_image_ids, i2t),
                 **pooled}
    if self.image_task is not None:
      results.update(self.image_task(params))
    return results

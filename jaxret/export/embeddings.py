"""`--mode=export`: L2-normalised embeddings of a split to `DIR/export/embeddings.npz`."""

import datetime
import json
import os

import jax
import numpy as np

from jaxret import files
from jaxret.data import sources
from jaxret.evaluate import embed
from jaxret.evaluate import retrieval
from jaxret.export import pca
from jaxret.inference import restore as restore_lib

FILENAME = 'embeddings.npz'


def path(workdir):
  return os.path.join(workdir, 'export', FILENAME)


def _json_value(value):
  """Metadata values JSON lacks: dates as YYYY-MM-DD, NumPy scalars as Python ones."""
  if isinstance(value, datetime.date):
    return value.isoformat()[:10]
  if isinstance(value, np.generic):
    return value.item()
  raise TypeError(f'metadata value {value!r} is not a string, a number or a date')


def export(config, workdir, step=None):
  """Embeds `config.export.split` with checkpoint `step` (default: latest).

  The file holds `image_ids` (N,), `image_emb` (N, D), `text_image_ids` (M,),
  `text_emb` (M, D), the caption strings `texts` (M,), and the model `step`.
  With `config.export.pca_dim` > 0 it also holds PCA-reduced copies,
  `image_emb_pca` (N, pca_dim) and `text_emb_pca` (M, pca_dim), and the
  projection (`pca_mean`, `pca_components`), fitted on the image descriptors of
  the first `config.export.pca_fit_images` training images (`export/pca.py`).
  """
  restored = restore_lib.restore(config, workdir, step)
  records = sources.load_split(config.data, config.export.split)
  embedder = embed.Embedder(restored.model, restored.mesh, config.eval.batch_size, config.data)
  image_emb, text_emb, text_image_ids, texts = retrieval.embed_split(
      embedder, restored.params, records, restored.tokenizer)
  reduced = {}
  if config.export.pca_dim > 0:
    train_records = sources.load_split(config.data, 'train')
    fit_images = train_records.images[:min(config.export.pca_fit_images, len(train_records))]
    mean, components = pca.fit(embedder.images(restored.params, fit_images),
                               config.export.pca_dim)
    reduced = {'image_emb_pca': pca.apply(image_emb, mean, components),
               'text_emb_pca': pca.apply(text_emb, mean, components),
               'pca_mean': mean, 'pca_components': components}
  out = path(workdir)
  if jax.process_index() == 0:
    with files.atomic_file(out, 'wb') as f:
      np.savez(f, image_ids=np.asarray(records.image_ids), image_emb=image_emb,
               text_image_ids=text_image_ids, text_emb=text_emb, texts=np.asarray(texts),
               step=np.asarray(restored.step), split=np.asarray(config.export.split),
               # The items' metadata (for filtered search) as one JSON string.
               metadata=np.asarray(json.dumps(records.metadata, default=_json_value)),
               **reduced)
  return out, restored.step, image_emb.shape

"""`--mode=index`: a ScaNN index of the exported image embeddings under `DIR/index/`;
with `index.texts` set, one of the exported captions under `DIR/texts/`
(`index/text_store.py`, for image→text search); with `index.token_dtype` set, a
late-interaction model's patch tokens of the gallery under `DIR/tokens/`
(`index/token_store.py`); for a video gallery, every clip's animated thumbnail under
`DIR/thumbnails/` (`index/thumbnails.py`)."""

import json
import os

import numpy as np

from jaxret import errors
from jaxret.data import options as data_options
from jaxret.data import sources
from jaxret.evaluate import embed
from jaxret.export import embeddings
from jaxret.index import store
from jaxret.index import text_store
from jaxret.index import thumbnails
from jaxret.index import token_store
from jaxret.inference import restore as restore_lib
from jaxret.rerank import reranker
from jaxret.rerank import visual_store

PROBE_SIZE = 8  # Exported captions kept with the index to recognise its model.


def build_index(config, workdir):
  export_path = embeddings.path(workdir)
  if not os.path.exists(export_path):
    raise errors.UserError(f'no exported embeddings at {export_path}; run --mode=export first')
  with np.load(export_path) as exported:
    image_emb, image_ids, step = exported['image_emb'], exported['image_ids'], exported['step']
    split = str(exported['split']) if 'split' in exported else config.export.split
    texts, text_emb = exported['texts'], exported['text_emb']
    text_image_ids = exported['text_image_ids']
    metadata = json.loads(str(exported['metadata'])) if 'metadata' in exported else None
  rows = np.linspace(0, len(texts) - 1, min(PROBE_SIZE, len(texts))).astype(int)
  probe = (texts[rows], text_emb[rows]) if len(texts) else None
  manifest = store.build(image_emb, image_ids, step=int(step), index_config=config.index,
                         out_dir=store.directory(workdir), split=split, probe=probe,
                         metadata=metadata)
  if config.index.texts:
    manifest['texts'] = text_store.build(texts, text_image_ids, text_emb, step=int(step),
                                         index_config=config.index,
                                         out_dir=text_store.directory(workdir), split=split)
  if config.rerank.slow_workdir:
    manifest['rerank'] = build_slow_store(config, workdir, image_ids, split)
  if config.index.token_dtype:
    manifest['tokens'] = build_token_store(config, workdir, image_ids, split, int(step))
  if data_options.resolve(config.data).num_frames:
    manifest['thumbnails'] = build_thumbnails(config, workdir, image_ids, split)
  return manifest


def _gallery_rows(config, image_ids, split):
  """(the split's records, the row of each of `image_ids` in them)."""
  records = sources.load_split(config.data, split)
  row_of = {image_id: row for row, image_id in enumerate(np.asarray(records.image_ids).tolist())}
  return records, [row_of[image_id] for image_id in image_ids.tolist()]


def _gallery_images(config, image_ids, split):
  records, rows = _gallery_rows(config, image_ids, split)
  return records.images[rows] if rows else records.images[:0]


def build_thumbnails(config, workdir, image_ids, split):
  """Every clip's animated thumbnail (`DIR/thumbnails/`), decoded one clip at a time;
  returns the store's manifest."""
  records, rows = _gallery_rows(config, image_ids, split)
  return thumbnails.save(thumbnails.directory(workdir), image_ids.tolist(),
                         (records.images[row] for row in rows), split)


def build_token_store(config, workdir, image_ids, split, step):
  """The gallery's patch tokens by the checkpoint that made the index, in
  `index.token_dtype` (`DIR/tokens/`); returns its manifest (with its size in bytes)."""
  token_store.check_dtype(config.index.token_dtype)
  restored = restore_lib.restore(config, workdir, step)
  embedder = embed.Embedder(restored.model, restored.mesh, config.eval.batch_size, config.data,
                            per_token=True)
  tokens = embedder.images(restored.params, _gallery_images(config, image_ids, split))
  return token_store.save(token_store.directory(workdir), image_ids, tokens,
                          dtype=config.index.token_dtype, model_step=step)


def build_slow_store(config, workdir, image_ids, split):
  """The slow model's features of the gallery (`rerank.features`: visual tokens or
  cross-attention keys and values), stored for re-ranking (`DIR/rerank/`)."""
  scorer, _, step = reranker.restore_scorer(config.rerank.slow_workdir, config.rerank,
                                           config.data)
  visual = scorer.gallery_features(_gallery_images(config, image_ids, split))
  return visual_store.save(visual_store.directory(workdir), image_ids, visual,
                           slow_workdir=config.rerank.slow_workdir, slow_step=step,
                           features=scorer.features)

"""`--mode=index`: a ScaNN index of the exported image embeddings under `DIR/index/`."""

import os

import numpy as np

from jaxret import errors
from jaxret.export import embeddings
from jaxret.index import store

PROBE_SIZE = 8  # Exported captions kept with the index to recognise its model.


def build_index(config, workdir):
  export_path = embeddings.path(workdir)
  if not os.path.exists(export_path):
    raise errors.UserError(f'no exported embeddings at {export_path}; run --mode=export first')
  with np.load(export_path) as exported:
    image_emb, image_ids, step = exported['image_emb'], exported['image_ids'], exported['step']
    split = str(exported['split']) if 'split' in exported else config.export.split
    texts, text_emb = exported['texts'], exported['text_emb']
  rows = np.linspace(0, len(texts) - 1, min(PROBE_SIZE, len(texts))).astype(int)
  probe = (texts[rows], text_emb[rows]) if len(texts) else None
  return store.build(image_emb, image_ids, step=int(step), index_config=config.index,
                     out_dir=store.directory(workdir), split=split, probe=probe)

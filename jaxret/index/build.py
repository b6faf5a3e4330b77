"""`--mode=index`: a ScaNN index of the exported image embeddings under `DIR/index/`."""

import os

import numpy as np

from jaxret import errors
from jaxret.export import embeddings
from jaxret.index import store


def build_index(config, workdir):
  export_path = embeddings.path(workdir)
  if not os.path.exists(export_path):
    raise errors.UserError(f'no exported embeddings at {export_path}; run --mode=export first')
  with np.load(export_path) as exported:
    image_emb, image_ids, step = exported['image_emb'], exported['image_ids'], exported['step']
  return store.build(image_emb, image_ids, step=int(step), index_config=config.index,
                     out_dir=store.directory(workdir))

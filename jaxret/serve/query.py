"""`--mode=query`: embed a text, search the index, print the top K (and save a contact sheet)."""

import os
import re

import numpy as np

from jaxret import errors
from jaxret.data import sources
from jaxret.evaluate import embed
from jaxret.export import embeddings
from jaxret.index import store
from jaxret.parallel import mesh as mesh_lib
from jaxret.serve import contact_sheet
from jaxret.inference import restore as restore_lib


def check_text(text):
  if not text or not text.strip():
    raise errors.UserError('empty query: pass a description, e.g. --query="a red circle"')


def check_k(k, gallery_size):
  if k < 1 or k > gallery_size:
    raise errors.UserError(f'k={k} is out of range: the gallery has {gallery_size} images; '
                           f'use 1 <= k <= {gallery_size}')


def _gallery_captions(workdir):
  """First caption of each gallery image, from the export (for readable output)."""
  path = embeddings.path(workdir)
  if not os.path.exists(path):
    return {}
  with np.load(path) as exported:
    captions = {}
    for image_id, text in zip(exported['text_image_ids'].tolist(), exported['texts'].tolist()):
      captions.setdefault(image_id, text)
  return captions


def query(config, workdir, text, k, step=None):
  """Returns [(image_id, score)] for `text` and writes `DIR/query/<text>.png`."""
  check_text(text)
  index = store.load(store.directory(workdir), expected_dim=config.model.embed_dim,
                     expected_step=step)
  check_k(k, len(index))
  restored = restore_lib.restore(config, workdir, index.manifest['model_step'])
  embedder = embed.Embedder(restored.model, restored.mesh, mesh_lib.batch_shards(restored.mesh),
                            config.data)
  tokens, mask = restored.tokenizer.encode([text])
  query_emb = embedder.texts(restored.params, tokens, mask)
  ids, scores = index.search(query_emb, k)
  hits = list(zip(ids[0].tolist(), scores[0].tolist()))
  captions = _gallery_captions(workdir)
  print(f'query: {text!r} (model step {restored.step}, {len(index)} images)')
  for rank, (image_id, score) in enumerate(hits, 1):
    caption = captions.get(image_id, '')
    print(f'  {rank:2d}. id {image_id}  score {score:.4f}' + (f'  [{caption}]' if caption else ''))
  sheet_path = _save_sheet(config, workdir, text, hits)
  if sheet_path:
    print(f'contact sheet: {sheet_path}')
  return hits


def _save_sheet(config, workdir, text, hits):
  records = sources.load_split(config.data, config.export.split)
  row_of = {image_id: row for row, image_id in enumerate(records.image_ids.tolist())}
  if not all(image_id in row_of for image_id, _ in hits):
    return None  # The gallery's images are not available from the data source.
  images = records.images[[row_of[image_id] for image_id, _ in hits]]
  labels = [f'{rank}: {score:.3f}' for rank, (_, score) in enumerate(hits, 1)]
  slug = re.sub(r'[^a-z0-9]+', '-', text.lower()).strip('-')[:80] or 'query'
  path = os.path.join(workdir, 'query', f'{slug}.png')
  os.makedirs(os.path.dirname(path), exist_ok=True)
  contact_sheet.contact_sheet(images, labels).save(path)
  return path

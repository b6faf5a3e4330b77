"""The dataset's captions as a second gallery, for image→text search: `DIR/texts/`.

`--mode=index` with `index.texts` set stores the exported captions of the
gallery's split beside the image index: a ScaNN searcher over their embeddings
(built with the image index's parameters, `index/scann_index.py`), the caption
strings, the image each one describes, and the float32 embeddings. A caption's
id is its row here (the export's order). Files: `scann/`, `texts.npy`,
`image_ids.npy`, `vectors.npy` and `manifest.json` (model step, embedding
dimension, caption count, build parameters, the split, and a SHA-256 of every
file); `build` replaces the folder atomically and `load` verifies it. The
captions are read-only: `POST /items` and `DELETE /items` change the images.
"""

import os
import time

import numpy as np

from jaxret import errors
from jaxret import files
from jaxret.index import scann_index
from jaxret.index import store

SUBDIR = 'texts'
MANIFEST = 'manifest.json'
SEARCHER = 'scann'
TEXTS = 'texts.npy'
IMAGE_IDS = 'image_ids.npy'
VECTORS = 'vectors.npy'


def directory(workdir):
  return os.path.join(workdir, SUBDIR)


class TextIndex:
  """Indexed captions: `search(queries, k)` gives caption ids (rows) and scores."""

  def __init__(self, searcher, texts, image_ids, vectors, manifest):
    self.searcher = searcher
    self.texts = texts
    self.image_ids = image_ids
    self.vectors = vectors
    self.manifest = manifest
    self._reorder = manifest['build_params'].get('reorder', 0)
    self._num_leaves = manifest['build_params'].get('num_leaves', 0)

  def __len__(self):
    return len(self.texts)

  def search(self, queries, k):
    """(Q, D) queries -> caption ids (Q, k) (int64) and scores (Q, k), best first."""
    rows, scores = scann_index.search(self.searcher, queries, k, self._reorder,
                                      self._num_leaves)
    return np.asarray(rows, np.int64), scores

  def captions(self, caption_ids):
    """(texts, image ids) of caption ids, as lists."""
    return self.texts[caption_ids].tolist(), self.image_ids[caption_ids].tolist()


def build(texts, image_ids, embeddings, *, step, index_config, out_dir, split=None):
  """Indexes captions `texts` (M,) of images `image_ids` (M,) by their `embeddings`
  (M, D) and replaces `out_dir` atomically; returns the manifest."""
  embeddings = np.asarray(embeddings, np.float32)
  if embeddings.ndim != 2 or not len(embeddings):
    raise errors.UserError(f'cannot index caption embeddings of shape {embeddings.shape}: '
                           'index.texts needs an export with captions')
  if not len(texts) == len(image_ids) == len(embeddings):
    raise errors.UserError(f'{len(texts)} captions, {len(image_ids)} image ids and '
                           f'{len(embeddings)} embeddings do not match')
  params = scann_index.build_params(len(embeddings), embeddings.shape[1], index_config)
  start = time.time()
  searcher = scann_index.build(embeddings, params)
  build_seconds = time.time() - start
  with files.staged_directory(out_dir) as staging:
    scann_index.save(searcher, os.path.join(staging, SEARCHER))
    np.save(os.path.join(staging, TEXTS), np.asarray(texts, np.str_), allow_pickle=False)
    np.save(os.path.join(staging, IMAGE_IDS), np.asarray(image_ids), allow_pickle=False)
    np.save(os.path.join(staging, VECTORS), embeddings, allow_pickle=False)
    manifest = {
        'model_step': int(step),
        'embedding_dim': int(embeddings.shape[1]),
        'num_texts': int(len(embeddings)),
        'split': split,
        'build_params': params,
        'build_seconds': build_seconds,
        'built_at': time.strftime('%Y-%m-%dT%H:%M:%S%z'),
        'checksums': store.checksums(staging),
    }
    files.write_json(os.path.join(staging, MANIFEST), manifest, indent=2)
  return manifest


def load(store_dir, expected_step, expected_dim=None):
  """The verified `TextIndex` in `store_dir`, made by checkpoint `expected_step`."""
  manifest = store.verified_manifest(
      store_dir, 'indexed captions',
      f'no indexed captions in {store_dir}; run --mode=index with index.texts=True')
  if manifest['model_step'] != expected_step:
    raise errors.UserError(f'the captions in {store_dir} were indexed from step '
                           f'{manifest["model_step"]}, the images from step {expected_step}; '
                           'rebuild them with --mode=index')
  if expected_dim is not None and manifest['embedding_dim'] != expected_dim:
    raise errors.UserError(f'the captions in {store_dir} have {manifest["embedding_dim"]}-d '
                           f'embeddings but the model makes {expected_dim}-d ones; rebuild '
                           'them with --mode=index')
  texts = np.load(os.path.join(store_dir, TEXTS), allow_pickle=False)
  image_ids = np.load(os.path.join(store_dir, IMAGE_IDS), allow_pickle=False)
  vectors = np.load(os.path.join(store_dir, VECTORS), allow_pickle=False)
  searcher = scann_index.load(os.path.join(store_dir, SEARCHER))
  if not searcher.size() == len(texts) == len(image_ids) == len(vectors) == manifest['num_texts']:
    raise errors.UserError(f'the captions in {store_dir} are inconsistent; rebuild them with '
                           '--mode=index')
  return TextIndex(searcher, texts, image_ids, vectors, manifest)

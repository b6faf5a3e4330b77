"""The gallery index under `DIR/index/`: a ScaNN searcher, the gallery ids and a manifest.

The manifest records the model step, embedding dimension, normalisation, item
count, build parameters, build time and a SHA-256 of every file; loading checks
all of them, so a damaged index or one from another model is refused.
"""

import hashlib
import json
import os
import shutil
import time

import numpy as np

from jaxret import errors
from jaxret.index import scann_index

MANIFEST = 'manifest.json'
IDS = 'ids.npy'
SEARCHER = 'scann'


def directory(workdir):
  return os.path.join(workdir, 'index')


def _sha256(path):
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  return digest.hexdigest()


def _checksums(root):
  sums = {}
  for folder, _, files in os.walk(root):
    for name in sorted(files):
      full = os.path.join(folder, name)
      relative = os.path.relpath(full, root)
      if relative != MANIFEST:
        sums[relative] = _sha256(full)
  return dict(sorted(sums.items()))


def build(image_emb, image_ids, *, step, index_config, out_dir):
  """Builds the index of `image_emb` and replaces `out_dir` atomically."""
  image_emb = np.asarray(image_emb, np.float32)
  if image_emb.ndim != 2 or not len(image_emb):
    raise errors.UserError(f'cannot index embeddings of shape {image_emb.shape}')
  params = scann_index.build_params(len(image_emb), image_emb.shape[1], index_config)
  start = time.time()
  searcher = scann_index.build(image_emb, params)
  build_seconds = time.time() - start
  staging = out_dir + f'.tmp-{os.getpid()}'
  shutil.rmtree(staging, ignore_errors=True)
  scann_index.save(searcher, os.path.join(staging, SEARCHER))
  np.save(os.path.join(staging, IDS), np.asarray(image_ids), allow_pickle=False)
  norms = np.linalg.norm(image_emb, axis=1)
  manifest = {
      'model_step': int(step),
      'embedding_dim': int(image_emb.shape[1]),
      'normalisation': 'l2' if np.allclose(norms, 1, atol=1e-3) else 'none',
      'num_items': int(len(image_emb)),
      'ids_file': IDS,
      'build_params': params,
      'build_seconds': build_seconds,
      'built_at': time.strftime('%Y-%m-%dT%H:%M:%S%z'),
      'checksums': _checksums(staging),
  }
  with open(os.path.join(staging, MANIFEST), 'w') as f:
    json.dump(manifest, f, indent=2)
  # Swap in the new index; the old one is removed only once the new one is complete.
  previous = out_dir + f'.old-{os.getpid()}'
  if os.path.exists(out_dir):
    os.replace(out_dir, previous)
  os.replace(staging, out_dir)
  shutil.rmtree(previous, ignore_errors=True)
  return manifest


class Index:
  """A loaded gallery index: `search(queries, k)` returns user ids and scores."""

  def __init__(self, searcher, ids, manifest):
    self.searcher = searcher
    self.ids = ids
    self.manifest = manifest

  def __len__(self):
    return len(self.ids)

  def search(self, queries, k):
    rows, scores = scann_index.search(self.searcher, queries, k)
    return self.ids[rows], scores


def load(index_dir, expected_dim=None, expected_step=None):
  """Loads and verifies the index in `index_dir` (which may have been moved or copied)."""
  manifest_path = os.path.join(index_dir, MANIFEST)
  if not os.path.exists(manifest_path):
    raise errors.UserError(f'no index in {index_dir}; run --mode=index first')
  try:
    with open(manifest_path) as f:
      manifest = json.load(f)
  except (OSError, ValueError) as e:
    raise errors.UserError(f'index manifest {manifest_path} is unreadable ({e}); '
                           'rebuild it with --mode=index') from e
  found = _checksums(index_dir)
  if found != manifest.get('checksums'):
    changed = sorted(set(found.items()) ^ set(manifest.get('checksums', {}).items()))
    names = sorted({name for name, _ in changed})
    raise errors.UserError(f'index in {index_dir} is damaged (files differ from its manifest: '
                           f'{", ".join(names)}); rebuild it with --mode=index')
  if expected_dim is not None and manifest['embedding_dim'] != expected_dim:
    raise errors.UserError(f'index has {manifest["embedding_dim"]}-d embeddings but the model '
                           f'makes {expected_dim}-d ones; rebuild it with --mode=index')
  if expected_step is not None and manifest['model_step'] != expected_step:
    raise errors.UserError(f'index was built from step {manifest["model_step"]}, not step '
                           f'{expected_step}; rebuild it with --mode=index')
  ids = np.load(os.path.join(index_dir, manifest['ids_file']), allow_pickle=False)
  searcher = scann_index.load(os.path.join(index_dir, SEARCHER))
  return Index(searcher, ids, manifest)


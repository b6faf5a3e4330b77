"""The gallery's patch tokens of a late-interaction model (FILIP), stored for serving:
`DIR/tokens/`.

FILIP is deployed as its authors describe: every image's patch vectors are
computed offline, and the token-wise score runs online over a shortlist from
the pooled index (`jaxret/rerank/tokenwise.py`). Storage dtypes
(`config.index.token_dtype`):

  float32   4 bytes per value, exact;
  bfloat16  2 bytes per value (stored as its uint16 bits);
  int8      1 byte per value plus one float32 scale per token:
            q = round(127 · x / max|x|), x ≈ q · max|x| / 127.

Files: `tokens.npy` ((N, P, D) in the storage dtype), `scales.npy` (int8 only,
(N, P) float32), `ids.npy` (the gallery's ids, in the same order) and
`manifest.json` (model step, dtype, shape, bytes per image and in all, SHA-256
of the files). Changes go through `save`, which replaces the folder atomically.
"""

import json
import os

import ml_dtypes
import numpy as np

from jaxret import errors
from jaxret import files
from jaxret.index import store

SUBDIR = 'tokens'
MANIFEST = 'manifest.json'
DTYPES = ('float32', 'bfloat16', 'int8')


def directory(workdir):
  return os.path.join(workdir, SUBDIR)


def check_dtype(dtype):
  if dtype not in DTYPES:
    raise errors.UserError(f'unknown index.token_dtype {dtype!r}; known: {", ".join(DTYPES)} '
                           "(or '' for no token store)")
  return dtype


def quantize(tokens, dtype):
  """(N, P, D) float tokens -> (stored array, per-token scales or None)."""
  tokens = np.asarray(tokens, np.float32)
  if check_dtype(dtype) == 'float32':
    return tokens, None
  if dtype == 'bfloat16':
    return tokens.astype(ml_dtypes.bfloat16), None
  scales = np.max(np.abs(tokens), axis=-1) / 127
  safe = np.where(scales > 0, scales, 1)[..., None]
  return np.clip(np.rint(tokens / safe), -127, 127).astype(np.int8), scales.astype(np.float32)


def dequantize(stored, scales):
  """The float32 tokens a stored array (and its scales, for int8) stands for."""
  values = np.asarray(stored).astype(np.float32)
  return values if scales is None else values * np.asarray(scales, np.float32)[..., None]


class TokenStore:
  """Patch tokens by gallery id, in their storage dtype; `tokens(ids)` gives float32."""

  def __init__(self, ids, stored, scales, manifest, directory=None):
    self.directory = directory
    self.ids = np.asarray(ids)
    self.stored = stored
    self.scales = scales
    self.manifest = manifest
    self._row_of = {image_id: row for row, image_id in enumerate(self.ids.tolist())}

  def __len__(self):
    return len(self.ids)

  def __contains__(self, image_id):
    return image_id in self._row_of

  def tokens(self, ids):
    """(len(ids), P, D) float32 tokens of `ids` (every one must be stored)."""
    missing = [image_id for image_id in ids if image_id not in self._row_of]
    if missing:
      raise errors.UserError(f'no stored patch tokens for image id {missing[0]!r}; rebuild the '
                             'token store with --mode=index')
    rows = np.asarray([self._row_of[image_id] for image_id in ids], np.int64)
    return dequantize(self.stored[rows], None if self.scales is None else self.scales[rows])

  def upsert(self, ids, tokens):
    """Adds or replaces the tokens of `ids` ((len(ids), P, D) float)."""
    stored, scales = quantize(tokens, self.manifest['dtype'])
    for image_id, item_stored, item_scales in zip(ids, stored, scales if scales is not None
                                                  else [None] * len(ids)):
      row = self._row_of.get(image_id)
      if row is None:
        row = len(self.ids)
        self._row_of[image_id] = row
        self.ids = np.concatenate([self.ids, np.asarray([image_id], self.ids.dtype)])
        self.stored = np.concatenate([self.stored, item_stored[None]])
        if self.scales is not None:
          self.scales = np.concatenate([self.scales, item_scales[None]])
      else:
        self.stored[row] = item_stored
        if self.scales is not None:
          self.scales[row] = item_scales

  def delete(self, ids):
    """Drops the tokens of `ids` (ids without tokens are ignored)."""
    keep = np.ones(len(self.ids), bool)
    keep[[self._row_of[i] for i in ids if i in self._row_of]] = False
    self.ids, self.stored = self.ids[keep], self.stored[keep]
    if self.scales is not None:
      self.scales = self.scales[keep]
    self._row_of = {image_id: row for row, image_id in enumerate(self.ids.tolist())}


  def save(self):
    """Writes the store (with its changes) back where it was loaded from."""
    return save_store(self.directory, self)


def save(out_dir, ids, tokens, *, dtype, model_step):
  """Quantizes (N, P, D) float tokens to `dtype` and writes the store (see `save_store`)."""
  stored, scales = quantize(tokens, dtype)
  manifest = {'dtype': dtype, 'model_step': int(model_step)}
  return save_store(out_dir, TokenStore(ids, stored, scales, manifest))


def save_store(out_dir, token_store):
  """Writes `token_store` to a staging folder and swaps it in for `out_dir`; returns the
  manifest (with the sizes)."""
  stored, scales = token_store.stored, token_store.scales
  dtype = token_store.manifest['dtype']
  with files.staged_directory(out_dir) as staging:
    np.save(os.path.join(staging, 'tokens.npy'),
            stored.view(np.uint16) if dtype == 'bfloat16' else stored, allow_pickle=False)
    if scales is not None:
      np.save(os.path.join(staging, 'scales.npy'), scales, allow_pickle=False)
    np.save(os.path.join(staging, 'ids.npy'), token_store.ids, allow_pickle=False)
    total = stored.nbytes + (0 if scales is None else scales.nbytes)
    manifest = {
        'dtype': dtype, 'model_step': token_store.manifest['model_step'],
        'num_items': int(len(stored)), 'tokens': int(stored.shape[1]),
        'dim': int(stored.shape[2]),
        'bytes_per_image': int(total // max(len(stored), 1)), 'bytes': int(total),
        'float32_bytes': int(stored.size * 4),
        'checksums': store.checksums(staging),
    }
    with open(os.path.join(staging, MANIFEST), 'w') as f:
      json.dump(manifest, f, indent=2)
  token_store.manifest = manifest
  return manifest


def load(store_dir, expected_step=None):
  """The verified `TokenStore` in `store_dir`."""
  manifest = store.verified_manifest(
      store_dir, 'patch tokens',
      f'no patch tokens in {store_dir}; run --mode=index with a late-interaction model and '
      'index.token_dtype set')
  if expected_step is not None and manifest['model_step'] != expected_step:
    raise errors.UserError(f'the patch tokens in {store_dir} come from step '
                           f'{manifest["model_step"]}, the index from step {expected_step}; '
                           'rebuild them with --mode=index')
  stored = np.load(os.path.join(store_dir, 'tokens.npy'), allow_pickle=False)
  if manifest['dtype'] == 'bfloat16':
    stored = stored.view(ml_dtypes.bfloat16)
  scales = None
  if manifest['dtype'] == 'int8':
    scales = np.load(os.path.join(store_dir, 'scales.npy'), allow_pickle=False)
  ids = np.load(os.path.join(store_dir, 'ids.npy'), allow_pickle=False)
  return TokenStore(ids, stored, scales, manifest, store_dir)

"""The gallery's slow visual tokens, precomputed at index time: `DIR/rerank/`.

Queries then run only the slow model's text side and decoders. Files: `visual.npy`
(per image the visual tokens (tokens, width) or the decoders' cross-attention keys
and values, `rerank.features`; float32 or bfloat16 stored as its uint16 bits),
`ids.npy` (the gallery's ids, in the same order), and `manifest.json` (the slow
workdir and step, which features, the dtype and shape, bytes per image, SHA-256
of the files).
"""

import json
import os

import ml_dtypes
import numpy as np

from jaxret import files
from jaxret.index import store

SUBDIR = 'rerank'
MANIFEST = 'manifest.json'


def directory(workdir):
  return os.path.join(workdir, SUBDIR)


def save(out_dir, ids, visual, *, slow_workdir, slow_step, features='tokens'):
  """Writes the store to a staging folder and swaps it in for `out_dir`."""
  visual = np.asarray(visual)
  dtype = 'bfloat16' if visual.dtype == ml_dtypes.bfloat16 else str(visual.dtype)
  stored = visual.view(np.uint16) if dtype == 'bfloat16' else visual
  with files.staged_directory(out_dir) as staging:
    np.save(os.path.join(staging, 'visual.npy'), stored, allow_pickle=False)
    np.save(os.path.join(staging, 'ids.npy'), np.asarray(ids), allow_pickle=False)
    manifest = {
        'slow_workdir': os.path.abspath(slow_workdir), 'slow_step': int(slow_step),
        'features': features,
        'dtype': dtype, 'num_items': int(len(visual)),
        'shape': [int(d) for d in visual.shape[1:]], 'bytes_per_image': int(visual[0].nbytes),
        'checksums': store.checksums(staging),
    }
    with open(os.path.join(staging, MANIFEST), 'w') as f:
      json.dump(manifest, f, indent=2)
  return manifest


def load(store_dir):
  """(ids, visual tokens, manifest), verified against the manifest's checksums."""
  manifest = store.verified_manifest(
      store_dir, 'slow visual tokens',
      f'no slow visual tokens in {store_dir}; run --mode=index with a config that names '
      'rerank.slow_workdir')
  visual = np.load(os.path.join(store_dir, 'visual.npy'), allow_pickle=False)
  if manifest['dtype'] == 'bfloat16':
    visual = visual.view(ml_dtypes.bfloat16)
  return np.load(os.path.join(store_dir, 'ids.npy'), allow_pickle=False), visual, manifest

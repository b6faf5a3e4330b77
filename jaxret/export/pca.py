"""PCA reduction of exported descriptors (IRT's short vectors).

Fitted on descriptors of training images (never on the exported split), then
applied to images and texts alike: centre with the fitted mean, project on the
top components, L2-normalise again, so dot products remain cosine similarities
in the reduced space.
"""

import numpy as np


def fit(emb, dim):
  """(mean (D,), components (dim, D)) of `emb` (N, D), components by decreasing variance."""
  emb = np.asarray(emb, np.float64)
  if not 0 < dim <= min(emb.shape):
    raise ValueError(f'PCA to {dim} dimensions needs 0 < dim <= min{emb.shape}')
  mean = emb.mean(axis=0)
  _, _, vt = np.linalg.svd(emb - mean, full_matrices=False)
  # Fix each component's sign (largest entry positive) so the result is deterministic.
  signs = np.sign(vt[np.arange(len(vt)), np.argmax(np.abs(vt), axis=1)])
  return mean.astype(np.float32), (vt[:dim] * signs[:dim, None]).astype(np.float32)


def apply(emb, mean, components, eps=1e-6):
  """(N, D) -> (N, dim) centred, projected and L2-normalised."""
  reduced = (np.asarray(emb, np.float32) - mean) @ components.T
  return reduced / np.maximum(np.linalg.norm(reduced, axis=1, keepdims=True), eps)

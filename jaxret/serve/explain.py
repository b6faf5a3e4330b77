"""Why this result: per-word heatmaps over one gallery image, one per scorer the workdir has.

`GET /explain?q=TEXT&id=ID` answers with

  {"query", "id", "image_size": [H, W],
   "scorers": {NAME: {"words": [TOKEN, ...], "grid": [rows, cols],
                      "heatmaps": [[rows * cols values] per word],
                      "best_patch": [index per word], "score": float, "about": TEXT}}}

`heatmaps[w][r * cols + c]` is how much word w is drawn to patch (r, c) of
the image; the page scales each map to the image and overlays it.

Explainers (`Explainer`): `FilipExplainer`, a late-interaction model's word–patch
cosine similarity (FILIP's word–patch alignment figure): each word's best patch
is what its term of the token-wise score used.
"""

import abc
import math

import numpy as np


class Explainer(abc.ABC):
  """One scorer's per-word heatmaps over a stored gallery image."""
  name: str
  about: str

  @abc.abstractmethod
  def __call__(self, query, image_id):
    """{'words', 'grid', 'heatmaps', 'best_patch', 'score', 'about'} for one (query, image)."""


def _grid(num_patches):
  side = math.isqrt(num_patches)
  if side * side != num_patches:
    raise ValueError(f'{num_patches} patches do not form a square grid')
  return [side, side]


class FilipExplainer(Explainer):
  """FILIP's token-wise match: the cosine similarity of every word with every patch."""
  name = 'filip'
  about = ('token-wise match: cosine similarity of each word with each patch; the score is '
           'the mean over words of their best patch')

  def __init__(self, tokenwise_reranker):
    self.reranker = tokenwise_reranker

  def __call__(self, query, image_id):
    similarity, words = self.reranker.word_patch_similarity(query, image_id)
    return {'words': list(words), 'grid': _grid(similarity.shape[1]),
            'heatmaps': np.round(similarity, 5).tolist(),
            'best_patch': np.argmax(similarity, axis=1).tolist(),
            'score': float(np.mean(np.max(similarity, axis=1))), 'about': self.about}


def explain(explainers, query, image_id, image_size):
  """The JSON-able answer of `GET /explain` (see the module docstring)."""
  return {'query': query, 'id': image_id, 'image_size': [image_size, image_size],
          'scorers': {explainer.name: explainer(query, image_id) for explainer in explainers}}

"""Why this result: per-word heatmaps over one gallery image, one per scorer the workdir has.

`GET /explain?q=TEXT&id=ID` answers with

  {"query", "id", "image_size": [H, W],
   "scorers": {NAME: {"words": [TOKEN, ...], "grid": [rows, cols],
                      "heatmaps": [[rows * cols values] per word],
                      "best_patch": [index per word], "score": float, "about": TEXT}}}

`heatmaps[w][r * cols + c]` is how much word w is drawn to patch (r, c) of
the image; the page scales each map to the image and overlays it.

Explainers (`Explainer`), one per scorer the workdir has:
  - `FilipExplainer` (`filip`): a late-interaction model's word–patch cosine
    similarity (FILIP's word–patch alignment figure): each word's best patch is
    what its term of the token-wise score used;
  - `SlowModelExplainer` over the re-ranker's slow model (`rerank.slow_workdir`):
    the captioner's cross-attention while predicting each word
    (`cross_attention`), or ALBEF's Grad-CAM of its ITM head on the fusion
    encoder's cross-attention (`grad_cam`), `rerank/attention_maps.py`.
"""

import abc
import math

import numpy as np

from jaxret import errors
from jaxret.rerank import attention_maps
from jaxret.rerank import reranker as reranker_lib


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


class SlowModelExplainer(Explainer):
  """The re-ranker's slow model (`rerank/reranker.FastSlowReranker`) over its stored
  visual tokens of the gallery."""
  about_by_kind = {
      'cross_attention': 'captioner cross-attention while predicting each word (mean over '
                         'heads and decoder blocks); score: h = log p_fwd + log p_bwd',
      'grad_cam': 'Grad-CAM of the ITM head on the fusion encoder\'s cross-attention; '
                  'score: ITM log-odds'}

  def __init__(self, fast_slow_reranker):
    self.reranker = fast_slow_reranker
    self.word_maps = attention_maps.WordMaps(fast_slow_reranker.scorer.model)
    self.name = self.word_maps.kind
    self.about = self.about_by_kind[self.name]

  def __call__(self, query, image_id):
    scorer, tokenizer = self.reranker.scorer, self.reranker.tokenizer
    if image_id not in self.reranker.row_of:
      raise errors.UserError(f'image id {image_id!r} has no stored slow visual tokens; rebuild '
                             'them with --mode=index')
    visual = np.asarray(self.reranker.visual[self.reranker.row_of[image_id]], np.float32)
    tokens, mask = tokenizer.encode([query])
    _, (positions, maps) = self.word_maps(scorer.params, visual, tokens[0], mask[0])
    side = math.isqrt(maps.shape[1])
    if side * side != maps.shape[1]:  # A [CLS] token first (ALBEF's ViT): not a place.
      maps = maps[:, 1:]
    names = tokenizer.backend.encode(query).tokens
    score = float(self.reranker.slow_scores(tokens, mask, [[image_id]])[0, 0])
    return {'words': [names[p] for p in positions], 'grid': _grid(maps.shape[1]),
            'heatmaps': np.round(maps, 6).tolist(),
            'best_patch': np.argmax(maps, axis=1).tolist(), 'score': score,
            'about': self.about}


def for_service(tokenwise, reranker):
  """The explainers a service has: FILIP's with a token-wise re-ranker, the slow model's
  with a fast+slow re-ranker whose model has maps."""
  explainers = [] if tokenwise is None else [FilipExplainer(tokenwise)]
  if (isinstance(reranker, reranker_lib.FastSlowReranker)
      and attention_maps.supported(reranker.scorer.model)):
    explainers.append(SlowModelExplainer(reranker))
  return explainers


def explain(explainers, query, image_id, image_size):
  """The JSON-able answer of `GET /explain` (see the module docstring)."""
  return {'query': query, 'id': image_id, 'image_size': [image_size, image_size],
          'scorers': {explainer.name: explainer(query, image_id) for explainer in explainers}}

"""What a model can do, declared by the classes it inherits, never probed.

A model class lists its capabilities next to `nn.Module`
(`class DualEncoder(nn.Module, capabilities.PooledEncoder)`); the interfaces
are abstract, so a class that declares one without writing its methods cannot
be instantiated. Code that needs a capability checks it with `isinstance` (or
`require`, which refuses a model that lacks it in one line naming both), so
that a config asking a model for something it cannot do fails before any work.

Every method below is called through `model.apply({'params': p}, ...,
method=model.NAME)`.
"""

import abc

from jaxret import errors


class PooledEncoder(abc.ABC):
  """One unit vector per image and per caption, in a joint space.

  Retrieval, export, the index and serving compare these.

    encode_image(images, train=False) -> ((B, D) unit vectors, intermediates)
    encode_text(tokens, mask, train=False) -> ((B, D) unit vectors, intermediates)

  `images` (B, H, W, 3) are normalised; `tokens`, `mask` (B, L) are a tokeniser's output.
  """

  @abc.abstractmethod
  def encode_image(self, images, train=False):
    """(B, H, W, 3) normalised images -> ((B, D) unit vectors, intermediates)."""

  @abc.abstractmethod
  def encode_text(self, tokens, mask, train=False):
    """(B, L) tokens and mask -> ((B, D) unit vectors, intermediates)."""


class TokenEncoder(abc.ABC):
  """Unit vectors per image patch and per caption token, scored token-wise.

  Late interaction (FILIP, `losses/filip.py`): the retrieval evaluator scores
  such a model token-wise as well as by its pooled vectors.

    encode_image_tokens(images, train=False) -> ((B, P, D) unit patch vectors, intermediates)
    encode_text_tokens(tokens, mask, train=False) -> ((B, L, D) unit vectors, padding zeroed,
                                                      intermediates)
  """

  @abc.abstractmethod
  def encode_image_tokens(self, images, train=False):
    """(B, H, W, 3) normalised images -> ((B, P, D) unit patch vectors, intermediates)."""

  @abc.abstractmethod
  def encode_text_tokens(self, tokens, mask, train=False):
    """(B, L) tokens and mask -> ((B, L, D) unit vectors, padding zeroed, intermediates)."""


class PairScorer(abc.ABC):
  """A score per (image, caption) pair, from the image's precomputed visual tokens.

  The slow model that re-ranks fast candidates (`jaxret/rerank`) and teaches the
  fast one (`objectives/distill.py`).

    visual_tokens(images) -> (B, T, C): the image side, computed once per gallery image
    score(visual, tokens, mask, visual_index=None) -> (P,) scores, higher is better

  `score`'s pair p is (visual[visual_index[p]], caption p), or (visual[p], caption p)
  without `visual_index`.
  """

  @abc.abstractmethod
  def visual_tokens(self, images):
    """(B, H, W, 3) normalised images -> (B, T, C) visual tokens."""

  @abc.abstractmethod
  def score(self, visual, tokens, mask, visual_index=None):
    """(P,) scores of P (visual tokens, caption) pairs: higher means a better match."""


class KeyValueScorer(abc.ABC):
  """A `PairScorer` whose text side reads the visual tokens only through per-layer
  cross-attention keys and values, which a gallery can store instead of the tokens.

    keys_values(visual) -> (B, ...) one array per image: every decoder layer's keys and values
    score_keys_values(keys_values, tokens, mask, visual_index=None) -> (P,) = score(...)
  """

  @abc.abstractmethod
  def keys_values(self, visual):
    """(B, T, C) visual tokens -> (B, ...) their cross-attention keys and values."""

  @abc.abstractmethod
  def score_keys_values(self, keys_values, tokens, mask, visual_index=None):
    """`score` from stored keys and values instead of visual tokens."""


class VideoInput(abc.ABC):
  """Takes clips (B, T, H, W, 3) wherever it takes images, when its image tower is a
  video tower (`models/towers.image_tower`: `model.image` names a `temporal`
  modelling); its methods are those of its other capabilities."""


def require(model, capability, purpose):
  """Refuses (`errors.UserError`, one line) a model that does not declare `capability`,
  naming the model, the capability and `purpose`, what needed it."""
  if not isinstance(model, capability):
    methods = ', '.join(sorted(capability.__abstractmethods__))
    raise errors.UserError(f'{purpose} needs a model that is a capabilities.{capability.__name__}'
                           f'{f" ({methods})" if methods else ""}; model {type(model).__name__} '
                           'is not')

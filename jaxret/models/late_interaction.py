"""Late-interaction dual encoder (FILIP): per-token embeddings instead of one vector.

Patch tokens (the ViT's CLS excluded) and text tokens are projected to
`embed_dim` and L2-normalised one by one; the similarity of an image and a text
is computed from the two token sets (`losses/filip.py`). For the vector index,
`encode_image` / `encode_text` also give one pooled unit vector per item: the
normalised mean of its unit token vectors (real tokens only), an approximation
of the token-wise score used to shortlist candidates.
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from jaxret.models import capabilities
from jaxret.models import dual_encoder
from jaxret.models import layers
from jaxret.models import towers


class LateInteractionDualEncoder(nn.Module, capabilities.PooledEncoder,
                                 capabilities.TokenEncoder, capabilities.VideoInput):
  """Image and text towers with per-token projections and a learnable logit scale
  (initialised to 1/0.07, clamped at 100, as in the dual encoder)."""
  vocab_size: int
  text_len: int
  image: dict
  text: dict
  embed_dim: int = 64  # The token embeddings' dimension (FILIP reduces it to save memory).
  dtype: Any = 'float32'
  remat_policy: str = 'none'
  scan_layers: bool = False

  def setup(self):
    self.image_encoder, self.text_encoder = towers.image_and_text(self)
    self.image_token_projection, self.text_token_projection = towers.projections(self.embed_dim)
    self.logit_scale = self.param('logit_scale', nn.initializers.constant(np.log(1 / 0.07)), ())

  def encode_image_tokens(self, images, train=False):
    """(B, H, W, 3) -> ((B, P, embed_dim) unit patch vectors, intermediates)."""
    _, intermediates = self.image_encoder(images, train=train)
    tokens = self.image_token_projection(intermediates['patch_tokens'])
    return layers.l2_normalize(tokens), intermediates

  def encode_text_tokens(self, tokens, mask, train=False):
    """(B, L) tokens and mask -> ((B, L, embed_dim) unit vectors, padding zeroed, intermediates)."""
    _, intermediates = self.text_encoder(tokens, mask, train=train)
    token_emb = layers.l2_normalize(self.text_token_projection(intermediates['tokens']))
    return token_emb * (mask > 0)[..., None], intermediates

  def encode_image(self, images, train=False):
    """(B, H, W, 3) -> ((B, embed_dim) pooled unit vectors, intermediates)."""
    tokens, intermediates = self.encode_image_tokens(images, train)
    return layers.l2_normalize(jnp.mean(tokens, axis=1)), intermediates

  def encode_text(self, tokens, mask, train=False):
    """(B, L) tokens and mask -> ((B, embed_dim) pooled unit vectors, intermediates)."""
    token_emb, intermediates = self.encode_text_tokens(tokens, mask, train)
    pooled = jnp.sum(token_emb, axis=1) / jnp.maximum(jnp.sum(mask > 0, axis=1), 1)[:, None]
    return layers.l2_normalize(pooled), intermediates

  def __call__(self, images, tokens, mask, train=False):
    image_tokens, image_out = self.encode_image_tokens(images, train)
    text_tokens, text_out = self.encode_text_tokens(tokens, mask, train)
    scale = dual_encoder.clamped_logit_scale(self.logit_scale)
    outputs = {'image_tokens': image_tokens, 'text_tokens': text_tokens, 'logit_scale': scale}
    return outputs, {'image': image_out, 'text': text_out}

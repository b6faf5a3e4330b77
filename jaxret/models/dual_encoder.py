"""Dual encoder: ViT + text transformer, projected to a joint space and L2-normalised."""

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from jaxret.models import layers
from jaxret.models import text as text_lib
from jaxret.models import vit

MAX_LOGIT_SCALE = 100.0


class DualEncoder(nn.Module):
  """Image and text towers with linear projections and a learnable logit scale.

  The logit scale is stored as its log, initialised to log(logit_scale_init)
  (CLIP: 1/0.07; SigLIP's temperature: 10) and clamped so that scale <= 100
  (open_clip); as a scalar it gets no weight decay. With `logit_bias_init` set
  (SigLIP: −10) the model also has a learnable logit bias.
  """
  vocab_size: int
  text_len: int
  image: dict
  text: dict
  embed_dim: int = 128
  dtype: str = 'float32'
  remat_policy: str = 'none'
  scan_layers: bool = False
  logit_scale_init: float = 1 / 0.07
  logit_bias_init: float | None = None

  def setup(self):
    shared = {'remat_policy': self.remat_policy, 'scan': self.scan_layers, 'dtype': self.dtype}
    self.image_encoder = vit.ViT(**self.image, **shared)
    self.text_encoder = text_lib.TextTransformer(
        vocab_size=self.vocab_size, max_len=self.text_len, **self.text, **shared)
    self.image_projection = nn.Dense(self.embed_dim, use_bias=False)
    self.text_projection = nn.Dense(self.embed_dim, use_bias=False)
    self.logit_scale = self.param(
        'logit_scale', nn.initializers.constant(np.log(self.logit_scale_init)), ())
    if self.logit_bias_init is not None:
      self.logit_bias = self.param(
          'logit_bias', nn.initializers.constant(self.logit_bias_init), ())

  def encode_image(self, images, train=False):
    """(B, H, W, 3) normalised images -> ((B, embed_dim) unit vectors, intermediates)."""
    pooled, intermediates = self.image_encoder(images, train=train)
    return layers.l2_normalize(self.image_projection(pooled)), intermediates

  def encode_text(self, tokens, mask, train=False):
    """(B, L) tokens and mask -> ((B, embed_dim) unit vectors, intermediates)."""
    pooled, intermediates = self.text_encoder(tokens, mask, train=train)
    return layers.l2_normalize(self.text_projection(pooled)), intermediates

  def __call__(self, images, tokens, mask, train=False):
    image_emb, image_out = self.encode_image(images, train)
    text_emb, text_out = self.encode_text(tokens, mask, train)
    scale = jnp.exp(jnp.minimum(self.logit_scale, np.log(MAX_LOGIT_SCALE)))
    outputs = {'image_emb': image_emb, 'text_emb': text_emb, 'logit_scale': scale}
    if self.logit_bias_init is not None:
      outputs['logit_bias'] = self.logit_bias
    return outputs, {'image': image_out, 'text': text_out}

"""Dual encoder: ViT + text transformer, projected to a joint space and L2-normalised."""

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from jaxret.models import capabilities
from jaxret.models import towers

MAX_LOGIT_SCALE = 100.0


class DualEncoder(nn.Module, capabilities.PooledEncoder, capabilities.VideoInput):
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
    self.image_encoder, self.text_encoder = towers.image_and_text(self)
    self.image_projection, self.text_projection = towers.projections(self.embed_dim)
    self.logit_scale = self.param(
        'logit_scale', nn.initializers.constant(np.log(self.logit_scale_init)), ())
    if self.logit_bias_init is not None:
      self.logit_bias = self.param(
          'logit_bias', nn.initializers.constant(self.logit_bias_init), ())

  def encode_image(self, images, train=False):
    """(B, H, W, 3) normalised images -> ((B, embed_dim) unit vectors, intermediates)."""
    return towers.encode_pooled(self.image_encoder, self.image_projection, images, train=train)

  def encode_text(self, tokens, mask, train=False):
    """(B, L) tokens and mask -> ((B, embed_dim) unit vectors, intermediates)."""
    return towers.encode_pooled(self.text_encoder, self.text_projection, tokens, mask,
                                train=train)

  def __call__(self, images, tokens, mask, train=False):
    image_emb, image_out = self.encode_image(images, train)
    text_emb, text_out = self.encode_text(tokens, mask, train)
    scale = clamped_logit_scale(self.logit_scale)
    outputs = {'image_emb': image_emb, 'text_emb': text_emb, 'logit_scale': scale}
    if self.logit_bias_init is not None:
      outputs['logit_bias'] = self.logit_bias
    return outputs, {'image': image_out, 'text': text_out}


def clamped_logit_scale(log_scale):
  """The logit scale exp(min(log_scale, log MAX_LOGIT_SCALE)) of a stored log scale."""
  return jnp.exp(jnp.minimum(log_scale, np.log(MAX_LOGIT_SCALE)))

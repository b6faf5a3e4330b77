"""The fusion (multimodal) encoder and its heads: image–text matching and masked LM.

ALBEF's multimodal encoder: text tokens from the text tower pass through
layers of self-attention, cross-attention to the image tokens, and an MLP.
The image–text matching (ITM) head reads the fused first ([CLS]) token, the
masked-language-modelling (MLM) head every fused token. Reusable by any model
that scores (image, text) pairs jointly, e.g. a slow re-ranker.
"""

from typing import Any

import flax.linen as nn

from jaxret.models import layers
from jaxret.models import variants


class FusionEncoder(nn.Module):
  """`(text_tokens (B, L, D), text_mask (B, L), image_tokens (B, T, C))` ->
  `(fused (B, L, D), intermediates)`.

  The variant gives depth, heads and MLP size; its width must equal the text
  tokens' D (the fusion layers continue the text tower, as in ALBEF, where
  they are the last 6 of BERT's 12 layers). Image tokens need no padding
  mask; padded text positions are never attended to.
  """
  variant: str = 'nano'
  depth: int | None = None
  prenorm: bool = True
  activation: str = 'gelu'
  layer_norm_eps: float = 1e-6
  final_norm: bool = True
  remat_policy: str = 'none'
  dtype: Any = 'float32'

  @nn.compact
  def __call__(self, text_tokens, text_mask, image_tokens):
    size = variants.decode(self.variant, depth=self.depth)
    if text_tokens.shape[-1] != size['width']:
      raise ValueError(f'fusion variant {self.variant!r} is {size["width"]} wide but the text '
                       f'tokens are {text_tokens.shape[-1]} wide; use the text tower\'s variant')
    block_cls = layers.rematted(layers.CrossAttentionBlock, self.remat_policy)
    dtype = layers.as_dtype(self.dtype)
    attention_mask = nn.make_attention_mask(text_mask > 0, text_mask > 0)
    x = text_tokens.astype(dtype)
    blocks = {}
    for i in range(size['depth']):
      x = block_cls(size['num_heads'], size['mlp_dim'], self.prenorm, self.activation,
                    self.layer_norm_eps, dtype, name=f'block{i:02d}')(
                        x, image_tokens, attention_mask)
      blocks[f'block{i:02d}'] = x
    if self.final_norm:
      x = nn.LayerNorm(epsilon=self.layer_norm_eps, name='final_norm')(x)
    return x, {'tokens': x, **blocks}


class ItmHead(nn.Module):
  """Image–text matching logits (B, 2) from the fused first token; index 1 = match."""

  @nn.compact
  def __call__(self, fused_tokens):
    return nn.Dense(2, name='logits')(fused_tokens[:, 0].astype('float32'))


class MlmHead(nn.Module):
  """BERT's prediction head: dense, GELU, LayerNorm, then vocabulary logits (B, L, V)."""
  vocab_size: int
  activation: str = 'gelu'
  layer_norm_eps: float = 1e-6

  @nn.compact
  def __call__(self, fused_tokens):
    x = fused_tokens.astype('float32')
    x = nn.Dense(x.shape[-1], name='transform')(x)
    x = layers.ACTIVATIONS[self.activation](x)
    x = nn.LayerNorm(epsilon=self.layer_norm_eps, name='norm')(x)
    return nn.Dense(self.vocab_size, name='logits')(x)

"""Fine-grained visual tokens for cross-attention: a ViT feature pyramid.

Miech et al. upsample a ResNet's last feature map and fuse it with earlier,
higher-resolution maps, so the decoder attends to a finer grid. A ViT's blocks
all share the patch grid, so the ViT counterpart here (as in ViTDet's simple
pyramid) upsamples the final token map 2x with a transposed convolution, adds an
upsampled earlier block's map, and adds a convolutional stem over the pixels at
the finer stride (patch / 2), which carries the detail the patch grid loses
(both written as matrix products, `layers.PatchExpansion` and
`layers.PatchEmbedding`, with the convolutions' parameters):
small objects and exact positions. `coarse` uses the final patch grid alone.
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxret.models import layers

LEVELS = ('coarse', 'fine')


class FeaturePyramid(nn.Module):
  """(images, ViT intermediates) -> (B, tokens, width) visual tokens."""
  level: str = 'fine'
  patch_size: int = 8
  mid_block: str = 'block01'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images, vit_out):
    if self.level not in LEVELS:
      raise ValueError(f'unknown pyramid level {self.level!r}; known: {LEVELS}')
    final = vit_out['patch_tokens']
    if self.level == 'coarse':
      return final
    batch, tokens, width = final.shape
    side = int(round(tokens ** 0.5))
    if side * side != tokens:
      raise ValueError(f'the fine pyramid needs a square patch grid, got {tokens} tokens')
    if self.patch_size % 2:
      raise ValueError(f'the fine pyramid needs an even patch size, got {self.patch_size}')

    def upsample(tokens_, name):
      grid = tokens_.reshape(batch, side, side, width)
      return layers.PatchExpansion(width, 2, dtype=self.dtype, name=name)(grid)

    middle = vit_out[self.mid_block]
    if middle.shape[1] != tokens:  # Drop the CLS token.
      middle = middle[:, 1:]
    stride = self.patch_size // 2
    stem = layers.PatchEmbedding(width, stride, dtype=self.dtype, name='stem')(
        images.astype(self.dtype))
    fine = upsample(final, 'up_final') + upsample(middle, 'up_middle') + stem
    fine = nn.LayerNorm(name='norm')(fine)
    return fine.reshape(batch, 4 * tokens, width)

"""Vision Transformer image tower (as in big_vision's vit.py, without a head)."""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from jaxret.models import layers
from jaxret.models import variants

POOLS = ('cls', 'gap', 'gem', 'map')


def posemb_sincos_2d(h, w, width, temperature=10_000.0):
  """Fixed 2-D sine-cosine position embedding, (1, h*w, width)."""
  if width % 4:
    raise ValueError(f'sincos2d position embedding needs a width divisible by 4, got {width}')
  y, x = np.mgrid[:h, :w]
  omega = 1.0 / temperature ** (np.arange(width // 4) / (width // 4 - 1))
  y = np.einsum('m,d->md', y.flatten(), omega)
  x = np.einsum('m,d->md', x.flatten(), omega)
  table = np.concatenate([np.sin(x), np.cos(x), np.sin(y), np.cos(y)], axis=1)
  return jnp.asarray(table[None], jnp.float32)


class ViT(nn.Module):
  """ViT encoder. Returns `(pooled, intermediates)`.

  Intermediates: `encoded` (all tokens after the final LayerNorm),
  `patch_tokens` (the patch grid's tokens, CLS excluded, (B, h*w, D)),
  `pre_logits` (the pooled vector) and `blockNN` (each block's output).
  """
  variant: str = 'nano/8'
  pool: str = 'cls'
  posemb: str = 'learn'
  gem_p: float = 3.0
  depth: int | None = None
  # Sizes that override the variant's (to match a pretrained checkpoint).
  width: int | None = None
  num_heads: int | None = None
  mlp_dim: int | None = None
  activation: str = 'gelu'
  layer_norm_eps: float = 1e-6
  patch_bias: bool = True  # CLIP's patch embedding has no bias.
  cls_posemb: bool = False  # The position embedding covers the CLS token too (CLIP).
  pre_norm: bool = False  # A LayerNorm after the embeddings (CLIP's ln_pre).
  remat_policy: str = 'none'
  scan: bool = False
  dtype: Any = 'float32'

  def sizes(self):
    """The variant's sizes with this tower's overrides: width, depth, mlp_dim, num_heads,
    patch_size. Code outside the tower (FLOP counts, the captioner's pyramid) reads
    them here, so that a setting a config leaves out takes the tower's default."""
    size = variants.decode(self.variant, depth=self.depth, width=self.width,
                           num_heads=self.num_heads, mlp_dim=self.mlp_dim)
    if 'patch_size' not in size:
      raise ValueError(f'ViT variant needs a patch size, e.g. "{self.variant}/16"')
    return size

  @nn.compact
  def __call__(self, images, *, train=False):
    del train  # No dropout: results must not depend on the device count.
    if self.pool not in POOLS:
      raise ValueError(f'unknown image pool {self.pool!r}; known: {POOLS}')
    size = self.sizes()
    dtype = layers.as_dtype(self.dtype)
    patch, width = size['patch_size'], size['width']
    x = layers.PatchEmbedding(width, patch, use_bias=self.patch_bias, dtype=dtype,
                              name='embedding')(images.astype(dtype))
    batch, h, w, _ = x.shape
    x = x.reshape(batch, h * w, width)
    if self.cls_posemb and self.pool != 'cls':
      raise ValueError('cls_posemb needs pool="cls"')
    if self.posemb not in ('learn', 'sincos2d'):
      raise ValueError(f'unknown posemb {self.posemb!r}; known: learn, sincos2d')
    num_tokens = h * w + int(self.cls_posemb)
    if self.posemb == 'sincos2d':
      if self.cls_posemb:
        raise ValueError('cls_posemb needs posemb="learn"')
      x = x + posemb_sincos_2d(h, w, width).astype(x.dtype)
    elif not self.cls_posemb:
      x = x + self.param('pos_embedding', nn.initializers.normal(stddev=1 / np.sqrt(width)),
                         (1, num_tokens, width)).astype(x.dtype)
    if self.pool == 'cls':
      cls = self.param('cls', nn.initializers.zeros, (1, 1, width))
      x = jnp.concatenate([jnp.tile(cls, (batch, 1, 1)).astype(x.dtype), x], axis=1)
    if self.cls_posemb:
      x = x + self.param('pos_embedding', nn.initializers.normal(stddev=1 / np.sqrt(width)),
                         (1, num_tokens, width)).astype(x.dtype)
    if self.pre_norm:
      x = nn.LayerNorm(epsilon=self.layer_norm_eps, name='pre_norm')(x)
    x, blocks = layers.Encoder(
        size['depth'], size['num_heads'], size['mlp_dim'], activation=self.activation,
        layer_norm_eps=self.layer_norm_eps, remat_policy=self.remat_policy, scan=self.scan,
        dtype=dtype, name='encoder')(x)
    encoded = nn.LayerNorm(epsilon=self.layer_norm_eps, name='encoder_norm')(x)
    patch_tokens = encoded[:, 1:] if self.pool == 'cls' else encoded
    if self.pool == 'cls':
      pooled = encoded[:, 0]
    elif self.pool == 'gap':
      pooled = jnp.mean(encoded, axis=1)
    elif self.pool == 'gem':
      pooled = layers.gem_pool(encoded, self.gem_p)
    else:
      pooled = layers.MAPHead(size['num_heads'], size['mlp_dim'], dtype, name='map_head')(x)
    return pooled, {'encoded': encoded, 'patch_tokens': patch_tokens,
                    'pre_logits': pooled, **blocks}

"""Text transformer tower: BERT-style (bidirectional, post-LN) or CLIP-style (causal, pre-LN)."""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxret.models import layers
from jaxret.models import variants

POOLS = ('first', 'last', 'mean')


class TextTransformer(nn.Module):
  """Returns `(pooled, intermediates)` for `tokens` (B, L) and `mask` (B, L).

  Pooling: `first` (the [CLS] token), `last` (the end token: the last
  non-padding position, as CLIP's EOT) or `mean` (over non-padding tokens).
  Intermediates: `tokens` (B, L, D) after the final norm, `pre_logits`, blocks.
  Parameter names follow the BERT/CLIP layout (token and position embeddings,
  query/key/value/out attention kernels, fc1/fc2) so their weights map on 1:1.
  """
  vocab_size: int
  max_len: int
  variant: str = 'nano'
  pool: str = 'first'
  causal: bool = False
  prenorm: bool = True
  embed_norm: bool = False  # LayerNorm after the embeddings (BERT).
  final_norm: bool = True  # LayerNorm after the last block (pre-LN models).
  activation: str = 'gelu'
  layer_norm_eps: float = 1e-6
  depth: int | None = None
  # Sizes that override the variant's (to match a pretrained checkpoint).
  width: int | None = None
  num_heads: int | None = None
  mlp_dim: int | None = None
  remat_policy: str = 'none'
  scan: bool = False
  dtype: Any = 'float32'

  def sizes(self):
    """The variant's sizes with this tower's overrides: width, depth, mlp_dim, num_heads."""
    return variants.decode(self.variant, depth=self.depth, width=self.width,
                           num_heads=self.num_heads, mlp_dim=self.mlp_dim)

  @nn.compact
  def __call__(self, tokens, mask, *, train=False):
    del train
    if self.pool not in POOLS:
      raise ValueError(f'unknown text pool {self.pool!r}; known: {POOLS}')
    size = self.sizes()
    dtype = layers.as_dtype(self.dtype)
    width = size['width']
    length = tokens.shape[1]
    if length > self.max_len:
      raise ValueError(f'text length {length} exceeds the model max_len {self.max_len}')
    x = nn.Embed(self.vocab_size, width, name='token_embedding')(tokens)
    position = self.param('position_embedding', nn.initializers.normal(stddev=0.01),
                          (self.max_len, width))
    x = (x + position[None, :length]).astype(dtype)
    if self.embed_norm:
      x = nn.LayerNorm(epsilon=self.layer_norm_eps, name='embedding_norm')(x)
    attention_mask = nn.make_attention_mask(mask > 0, mask > 0)
    if self.causal:
      attention_mask = nn.combine_masks(attention_mask, nn.make_causal_mask(tokens))
    x, blocks = layers.Encoder(
        size['depth'], size['num_heads'], size['mlp_dim'], prenorm=self.prenorm,
        activation=self.activation, layer_norm_eps=self.layer_norm_eps,
        remat_policy=self.remat_policy, scan=self.scan, dtype=dtype,
        name='encoder')(x, attention_mask)
    if self.final_norm:
      x = nn.LayerNorm(epsilon=self.layer_norm_eps, name='final_norm')(x)
    if self.pool == 'first':
      pooled = x[:, 0]
    elif self.pool == 'last':
      last = jnp.maximum(jnp.sum(mask > 0, axis=1) - 1, 0)
      pooled = jnp.take_along_axis(x, last[:, None, None], axis=1)[:, 0]
    else:
      weights = (mask > 0).astype(x.dtype)[..., None]
      pooled = jnp.sum(x * weights, axis=1) / jnp.maximum(jnp.sum(weights, axis=1), 1)
    return pooled, {'tokens': x, 'pre_logits': pooled, **blocks}

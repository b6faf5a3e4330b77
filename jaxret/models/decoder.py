"""A transformer decoder: causal self-attention, cross-attention to visual tokens, MLP."""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxret.models import layers


class DecoderBlock(nn.Module):
  """Pre-LN: x += SelfAttn(LN x) (causal, padding-masked); x += CrossAttn(LN x, visual);
  x += MLP(LN x)."""
  num_heads: int
  mlp_dim: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, visual, self_mask, cross_mask=None, visual_index=None):
    y = nn.LayerNorm(name='norm1')(x)
    x = x + layers.Attention(self.num_heads, self.dtype, name='self_attention')(y, y, self_mask)
    y = nn.LayerNorm(name='norm2')(x)
    x = x + layers.Attention(self.num_heads, self.dtype, name='cross_attention')(
        y, visual, cross_mask, kv_index=visual_index)
    y = nn.LayerNorm(name='norm3')(x)
    return x + layers.MlpBlock(self.mlp_dim, dtype=self.dtype, name='mlp')(y)


class Decoder(nn.Module):
  """`depth` decoder blocks over embedded tokens; returns the final-normed states."""
  depth: int
  num_heads: int
  mlp_dim: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, visual, mask, visual_index=None):
    """`visual_index` (B,): sequence b reads visual[visual_index[b]] (default: visual[b])."""
    self_mask = nn.combine_masks(nn.make_attention_mask(mask > 0, mask > 0),
                                 nn.make_causal_mask(mask))
    for i in range(self.depth):
      x = DecoderBlock(self.num_heads, self.mlp_dim, self.dtype, name=f'block{i:02d}')(
          x, visual, self_mask, visual_index=visual_index)
    return nn.LayerNorm(name='final_norm')(x)

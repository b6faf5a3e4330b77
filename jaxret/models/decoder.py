"""A transformer decoder: causal self-attention, cross-attention to visual tokens, MLP."""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxret.models import layers


class Decoder(nn.Module):
  """`depth` pre-LN cross-attention blocks (`layers.CrossAttentionBlock`: causal,
  padding-masked self-attention, cross-attention to the visual tokens, MLP) over
  embedded tokens; returns the final-normed states."""
  depth: int
  num_heads: int
  mlp_dim: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, visual, mask, visual_index=None, visual_kv=None):
    """`visual_index` (B,): sequence b reads visual[visual_index[b]] (default: visual[b]).
    `visual_kv`: per block, the cross-attention's (keys, values) of the visual tokens
    (`keys_values`), read in place of `visual` (then None)."""
    self_mask = nn.combine_masks(nn.make_attention_mask(mask > 0, mask > 0),
                                 nn.make_causal_mask(mask))
    for i in range(self.depth):
      block = layers.CrossAttentionBlock(self.num_heads, self.mlp_dim, dtype=self.dtype,
                                         name=f'block{i:02d}')
      x = block(x, visual, self_mask, context_index=visual_index,
                context_kv=None if visual_kv is None else visual_kv[i])
    return nn.LayerNorm(name='final_norm')(x)


def keys_values(decoder_params, visual):
  """Per block of a `Decoder` with parameters `decoder_params`, its cross-attention's
  (keys, values) of `visual` (B, T, C): what a gallery can store instead of `visual`."""
  depth = len([name for name in decoder_params if name.startswith('block')])
  return [layers.project_kv(decoder_params[f'block{i:02d}']['cross_attention'], visual)
          for i in range(depth)]

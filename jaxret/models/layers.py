"""Transformer building blocks shared by the image, text and fusion towers."""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

ACTIVATIONS = {
    'gelu': lambda x: nn.gelu(x, approximate=False),
    'gelu_tanh': lambda x: nn.gelu(x, approximate=True),
    'quick_gelu': lambda x: x * nn.sigmoid(1.702 * x),  # CLIP's.
    'relu': nn.relu,
}

# Rematerialisation policies by name (`none` keeps every activation).
REMAT_POLICIES = {
    'full': None,  # Save nothing: recompute the whole block in the backward pass.
    'dots': jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    'dots_saveable': jax.checkpoint_policies.dots_saveable,
}


def as_dtype(dtype):
  return jnp.dtype(dtype)


def rematted(block_cls, remat_policy, **remat_options):
  """`block_cls` recomputing its activations in the backward pass under the policy
  named `remat_policy` (`none`: `block_cls` itself, keeping every activation)."""
  if remat_policy == 'none':
    return block_cls
  if remat_policy not in REMAT_POLICIES:
    raise ValueError(f'unknown remat_policy {remat_policy!r}; '
                     f'known: none, {", ".join(REMAT_POLICIES)}')
  return nn.remat(block_cls, policy=REMAT_POLICIES[remat_policy], **remat_options)


class PatchEmbedding(nn.Module):
  """Non-overlapping p x p patches projected to `features`: the same function and
  parameters (`kernel` (p, p, C, features), `bias`) as a convolution with stride
  p, computed as one matrix product over the patches' pixels. XLA's CPU backend
  turns the strided convolution's kernel gradient into a slow dilated
  convolution when the images come from a slice inside a loop (each chunk of
  `config.microbatches`); a matrix product has no such case."""
  features: int
  patch_size: int
  use_bias: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images):
    batch, height, width, channels = images.shape
    patch = self.patch_size
    kernel = self.param('kernel', nn.initializers.lecun_normal(),
                        (patch, patch, channels, self.features), jnp.float32)
    bias = (self.param('bias', nn.initializers.zeros, (self.features,), jnp.float32)
            if self.use_bias else None)
    images, kernel, bias = nn.dtypes.promote_dtype(images, kernel, bias, dtype=self.dtype)
    patches = images.reshape(batch, height // patch, patch, width // patch, patch, channels)
    x = jnp.einsum('bhpwqc,pqcd->bhwd', patches, kernel)
    return x if bias is None else x + bias


class PatchExpansion(nn.Module):
  """Each token of a (B, H, W, C) grid to a p x p block of `features`: the same
  function and parameters (`kernel` (p, p, C, features), `bias`) as flax's
  `ConvTranspose` with kernel size and stride p (which applies the kernel
  flipped), computed as one matrix product, for the reason `PatchEmbedding`
  gives."""
  features: int
  factor: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, grid):
    batch, height, width, channels = grid.shape
    factor = self.factor
    kernel = self.param('kernel', nn.initializers.lecun_normal(),
                        (factor, factor, channels, self.features), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (self.features,), jnp.float32)
    grid, kernel, bias = nn.dtypes.promote_dtype(grid, kernel, bias, dtype=self.dtype)
    x = jnp.einsum('bhwc,pqcd->bhpwqd', grid, kernel[::-1, ::-1])
    return x.reshape(batch, height * factor, width * factor, self.features) + bias


class MlpBlock(nn.Module):
  mlp_dim: int
  activation: str = 'gelu'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    width = x.shape[-1]
    x = nn.Dense(self.mlp_dim, dtype=self.dtype, name='fc1')(x)
    x = ACTIVATIONS[self.activation](x)
    return nn.Dense(width, dtype=self.dtype, name='fc2')(x)


class Attention(nn.Module):
  """Multi-head attention with flax's parameter layout (query/key/value/out,
  kernels (D, heads, D/heads)) but no key bias: a key bias adds the same q·b to
  every logit of a row, so softmax removes it; its gradient is exactly zero and
  in float32 only noise, which Adam would amplify into parameter drift."""
  num_heads: int
  dtype: Any = jnp.float32
  # Cross-attention, explained (`rerank/attention_maps.py`): when the 'intermediates'
  # collection is mutable or 'perturbations' are given, the weights (B, heads, Lq, Lkv)
  # are sown as `weights`, after adding a zero perturbation `attention_weights` (whose
  # gradient Grad-CAM reads); otherwise the fused attention runs unchanged.
  expose_weights: bool = False

  @nn.compact
  def __call__(self, inputs_q, inputs_kv, mask=None, kv_index=None, projected_kv=None):
    """`kv_index` (B,): row b of the queries attends to inputs_kv[kv_index[b]] (keys and
    values are projected once per row of inputs_kv, then gathered). `projected_kv`:
    (keys, values), each (B', T, heads, D/heads), already projected from inputs_kv
    (`project_kv`'s formula; stored for a gallery), in place of inputs_kv."""
    width = inputs_q.shape[-1]
    if width % self.num_heads:
      raise ValueError(f'width {width} is not divisible by {self.num_heads} heads')
    shape = (self.num_heads, width // self.num_heads)
    query = nn.DenseGeneral(shape, dtype=self.dtype, name='query')(inputs_q)
    if projected_kv is None:
      key = nn.DenseGeneral(shape, use_bias=False, dtype=self.dtype, name='key')(inputs_kv)
      value = nn.DenseGeneral(shape, dtype=self.dtype, name='value')(inputs_kv)
    else:
      key, value = (p.astype(self.dtype) for p in projected_kv)
    if kv_index is not None:
      key, value = key[kv_index], value[kv_index]
    if self.expose_weights and (self.is_mutable_collection('intermediates')
                                or self.is_mutable_collection('perturbations')
                                or self.has_variable('perturbations', 'attention_weights')):
      weights = nn.dot_product_attention_weights(query, key, mask=mask, dtype=self.dtype)
      weights = self.perturb('attention_weights', weights)
      self.sow('intermediates', 'weights', weights)
      x = jnp.einsum('...hqk,...khd->...qhd', weights, value)
    else:
      x = nn.dot_product_attention(query, key, value, mask=mask, dtype=self.dtype)
    return nn.DenseGeneral(width, axis=(-2, -1), dtype=self.dtype, name='out')(x)


def project_kv(attention_params, inputs_kv):
  """(keys, values) of an `Attention` with parameters `attention_params` for inputs_kv
  (B, T, C): what it computes before attending, each (B, T, heads, D/heads)."""
  key = jnp.einsum('btc,chd->bthd', inputs_kv, attention_params['key']['kernel'])
  value = (jnp.einsum('btc,chd->bthd', inputs_kv, attention_params['value']['kernel'])
           + attention_params['value']['bias'])
  return key, value


class _BlockSettings(nn.Module):
  """The settings of one transformer layer, self-attention or cross-attention, in
  the order that `Encoder` and the fusion encoder pass them."""
  num_heads: int
  mlp_dim: int
  prenorm: bool = True
  activation: str = 'gelu'
  layer_norm_eps: float = 1e-6
  dtype: Any = jnp.float32


class EncoderBlock(_BlockSettings):
  """Self-attention + MLP, pre-LN (ViT, CLIP) or post-LN (BERT)."""

  @nn.compact
  def __call__(self, x, attention_mask=None):
    attention = Attention(self.num_heads, self.dtype, name='attention')
    mlp = MlpBlock(self.mlp_dim, self.activation, self.dtype, name='mlp')
    norm1 = nn.LayerNorm(epsilon=self.layer_norm_eps, name='norm1')
    norm2 = nn.LayerNorm(epsilon=self.layer_norm_eps, name='norm2')
    if self.prenorm:
      y = norm1(x)
      x = x + attention(y, y, mask=attention_mask)
      return x + mlp(norm2(x))
    x = norm1(x + attention(x, x, mask=attention_mask))
    return norm2(x + mlp(x))


class CrossAttentionBlock(_BlockSettings):
  """Self-attention, cross-attention to a context, MLP: one layer of a fusion
  encoder (ALBEF's multimodal BERT layers), pre-LN or post-LN.

  The queries `x` (B, L, D) attend to each other under `attention_mask`, then to
  `context` (B, T, C) under `context_mask` (None: every context token); C may
  differ from D, since the key and value projections map C to D.
  """

  @nn.compact
  def __call__(self, x, context, attention_mask=None, context_mask=None, context_index=None,
               context_kv=None):
    """`context_index` (B,): row b attends to context[context_index[b]]; `context_kv`: the
    cross-attention's projected (keys, values) of the context, in its place (see
    `Attention`; `context` may then be None)."""
    attention = Attention(self.num_heads, self.dtype, name='attention')
    cross_attention = Attention(self.num_heads, self.dtype, expose_weights=True,
                                name='cross_attention')
    mlp = MlpBlock(self.mlp_dim, self.activation, self.dtype, name='mlp')
    norm1 = nn.LayerNorm(epsilon=self.layer_norm_eps, name='norm1')
    cross_norm = nn.LayerNorm(epsilon=self.layer_norm_eps, name='cross_norm')
    norm2 = nn.LayerNorm(epsilon=self.layer_norm_eps, name='norm2')
    context = None if context is None else context.astype(x.dtype)
    if self.prenorm:
      y = norm1(x)
      x = x + attention(y, y, mask=attention_mask)
      x = x + cross_attention(cross_norm(x), context, context_mask, context_index, context_kv)
      return x + mlp(norm2(x))
    x = norm1(x + attention(x, x, mask=attention_mask))
    x = cross_norm(x + cross_attention(x, context, context_mask, context_index, context_kv))
    return norm2(x + mlp(x))


class _ScannedBlock(EncoderBlock):
  """An EncoderBlock in `nn.scan`'s (carry, x) -> (carry, y) form."""

  @nn.compact
  def __call__(self, x, attention_mask=None):  # pylint: disable=arguments-differ
    x = super().__call__(x, attention_mask)
    return x, x


class Encoder(nn.Module):
  """A stack of `EncoderBlock`s; returns the output and each block's output.

  `remat_policy` (none | full | dots | dots_saveable) recomputes activations in
  the backward pass to save memory; `scan` compiles one block and loops over
  stacked parameters (faster compiles, parameters under `blocks` with a
  leading depth axis instead of `block00`, `block01`, ...).
  """
  depth: int
  num_heads: int
  mlp_dim: int
  prenorm: bool = True
  activation: str = 'gelu'
  layer_norm_eps: float = 1e-6
  remat_policy: str = 'none'
  scan: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, attention_mask=None):
    block_cls = rematted(_ScannedBlock if self.scan else EncoderBlock, self.remat_policy,
                         prevent_cse=not self.scan)
    settings = (self.num_heads, self.mlp_dim, self.prenorm, self.activation,
                self.layer_norm_eps, self.dtype)
    if self.scan:
      stack = nn.scan(block_cls, variable_axes={'params': 0}, split_rngs={'params': True},
                      in_axes=nn.broadcast, length=self.depth)
      x, outputs = stack(*settings, name='blocks')(x, attention_mask)
      return x, {f'block{i:02d}': outputs[i] for i in range(self.depth)}
    blocks = {}
    for i in range(self.depth):
      x = block_cls(*settings, name=f'block{i:02d}')(x, attention_mask)
      blocks[f'block{i:02d}'] = x
    return x, blocks


class MAPHead(nn.Module):
  """Multihead attention pooling with a learned probe (big_vision's 'map')."""
  num_heads: int
  mlp_dim: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    probe = self.param('probe', nn.initializers.xavier_uniform(), (1, 1, x.shape[-1]))
    probe = jnp.tile(probe, (x.shape[0], 1, 1)).astype(x.dtype)
    x = Attention(self.num_heads, self.dtype, name='attention')(probe, x)
    y = nn.LayerNorm(name='norm')(x)
    x = x + MlpBlock(self.mlp_dim, dtype=self.dtype, name='mlp')(y)
    return x[:, 0]


def gem_pool(tokens, p=3.0, eps=1e-6):
  """Generalised-mean pooling over tokens (axis 1), on values clamped at eps."""
  tokens = jnp.maximum(tokens.astype(jnp.float32), eps)
  return jnp.mean(tokens**p, axis=1) ** (1.0 / p)


def l2_normalize(x, eps=1e-6):
  x = x.astype(jnp.float32)
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)

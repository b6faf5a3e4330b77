"""The slow model of Miech et al. (2021): a bidirectional captioner that scores pairs.

h(x, y) = log p_fwd(y | x) + log p_bwd(y | x): a forward decoder reads the
caption left to right and a backward decoder right to left (the words reversed,
see `losses/caption.py`), both cross-attending to the image's visual tokens
(a ViT plus a feature pyramid, `models/pyramid.py`). The decoders share the
token and position embeddings, the visual projection and the output layer.
"""

import flax.linen as nn
import jax.numpy as jnp

from jaxret.losses import caption
from jaxret.models import capabilities
from jaxret.models import decoder as decoder_lib
from jaxret.models import pyramid as pyramid_lib
from jaxret.models import towers
from jaxret.models import variants


class SlowCaptioner(nn.Module, capabilities.PairScorer, capabilities.KeyValueScorer,
                    capabilities.VideoInput):
  """Methods: `visual_tokens(images)` and `score(visual, tokens, mask)` (h per pair: the
  `capabilities.PairScorer` of re-ranking and distillation), `log_likelihoods(visual,
  tokens, mask)` and `__call__(images, tokens, mask)`.

  `keys_values(visual)` and `score_keys_values(...)` (`capabilities.KeyValueScorer`) score
  from the decoders' cross-attention keys and values of the visual tokens instead.

  `image`: the ViT's settings (`models/vit.py`), or a video tower's (`models/video.py`,
  whose space-time tokens the decoders cross-attend to: use `pyramid='coarse'`); `decoder`:
  `variant` and optionally
  the size settings that override it (`depth`, `width`, `num_heads`, `mlp_dim`).
  """
  vocab_size: int
  text_len: int
  image: dict
  decoder: dict
  pyramid: str = 'fine'
  dtype: str = 'float32'
  remat_policy: str = 'none'
  scan_layers: bool = False

  def setup(self):
    self.image_encoder = towers.image_tower(self.image, remat_policy=self.remat_policy,
                                            scan=self.scan_layers, dtype=self.dtype)
    image_size = self.image_encoder.sizes()
    self.feature_pyramid = pyramid_lib.FeaturePyramid(
        self.pyramid, image_size['patch_size'],
        mid_block=f'block{max(image_size["depth"] // 2 - 1, 0):02d}', dtype=self.dtype)
    size = variants.decode(**self.decoder)
    width = size['width']
    self.visual_projection = nn.Dense(width, dtype=self.dtype)
    self.token_embedding = nn.Embed(self.vocab_size, width)
    self.position_embedding = self.param(
        'position_embedding', nn.initializers.normal(stddev=0.01), (self.text_len, width))
    stack = dict(depth=size['depth'], num_heads=size['num_heads'], mlp_dim=size['mlp_dim'],
                 dtype=self.dtype)
    self.forward_decoder = decoder_lib.Decoder(**stack)
    self.backward_decoder = decoder_lib.Decoder(**stack)
    self.output = nn.Dense(self.vocab_size, dtype=self.dtype)

  def visual_tokens(self, images):
    """(B, H, W, 3) images or (B, T, H, W, 3) clips -> (B, tokens, width): what the
    decoders cross-attend to."""
    _, vit_out = self.image_encoder(images)
    return self.visual_projection(self.feature_pyramid(images, vit_out))

  def next_token_logits(self, visual, tokens, mask, backward=False, visual_index=None,
                        visual_kv=None):
    """Teacher-forced logits (P, L-1, V): position t predicts token t+1 of `tokens`
    (already reversed for the backward decoder). `visual_index`: see `score`;
    `visual_kv`: this decoder's per-block (keys, values), in place of `visual`."""
    decoder = self.backward_decoder if backward else self.forward_decoder
    inputs = tokens[:, :-1]
    x = self.token_embedding(inputs) + self.position_embedding[None, :inputs.shape[1]]
    return self.output(decoder(x.astype(self.dtype), visual, mask[:, :-1],
                               visual_index=visual_index, visual_kv=visual_kv))

  def log_likelihoods(self, visual, tokens, mask, visual_index=None, keys_values=None):
    """(log p_fwd(y | x), log p_bwd(y | x)), each (P,), for P (visual, caption) pairs;
    `keys_values` (see `keys_values`) in place of `visual`."""
    reversed_tokens = caption.reverse_captions(tokens, mask)
    per_decoder = ((None, None) if keys_values is None else
                   [[(keys_values[:, d, i, 0], keys_values[:, d, i, 1])
                     for i in range(keys_values.shape[2])] for d in range(2)])
    forward = caption.token_log_likelihood(
        self.next_token_logits(visual, tokens, mask, visual_index=visual_index,
                               visual_kv=per_decoder[0]),
        tokens[:, 1:], mask[:, 1:])
    backward = caption.token_log_likelihood(
        self.next_token_logits(visual, reversed_tokens, mask, backward=True,
                               visual_index=visual_index, visual_kv=per_decoder[1]),
        reversed_tokens[:, 1:], mask[:, 1:])
    return forward, backward

  def keys_values(self, visual):
    """(B, 2, depth, 2, T, heads, width/heads): for each decoder (forward, backward) and
    block, the cross-attention's keys and values of the visual tokens (B, T, width)."""
    params = self.variables['params']
    per_decoder = [decoder_lib.keys_values(params[name], visual)
                   for name in ('forward_decoder', 'backward_decoder')]
    return jnp.stack([jnp.stack([jnp.stack(kv, axis=1) for kv in blocks], axis=1)
                      for blocks in per_decoder], axis=1)

  def score_keys_values(self, keys_values, tokens, mask, visual_index=None):
    """h(x, y) per pair from the images' stored keys and values (see `score`)."""
    forward, backward = self.log_likelihoods(None, tokens, mask, visual_index, keys_values)
    return forward + backward

  def score(self, visual, tokens, mask, visual_index=None):
    """h(x, y) per pair: higher means the caption fits the image better.

    `visual_index` (P,): pair p is (visual[visual_index[p]], caption p), so the
    cross-attention keys and values of an image are projected once however many
    captions it is scored against (default: visual holds one image per pair).
    """
    forward, backward = self.log_likelihoods(visual, tokens, mask, visual_index)
    return forward + backward

  def __call__(self, images, tokens, mask, train=False):
    del train
    forward, backward = self.log_likelihoods(self.visual_tokens(images), tokens, mask)
    return {'log_p_forward': forward, 'log_p_backward': backward}, {}

"""Video tower: the image ViT on every frame (shared weights), then time.

A clip (B, T, H, W, 3) is encoded frame by frame by the ViT this class
extends, so its parameters keep the image tower's names (`embedding`,
`encoder`, ...) and an image workdir's tower loads as it is. Each frame's
pooled vector gets a learned time embedding, then `temporal` combines them:

  - 'mean': the average over frames, the baseline (blind to frame order);
  - 'transformer': a small transformer over the T frame vectors with a CLS
    token (`temporal_depth` blocks, the ViT's width and heads), the default.

The space-time tokens (every frame's patch tokens plus its time embedding,
(B, T·P, D)) are what late interaction (FILIP) matches words against and what
the slow captioner cross-attends to. Images (B, H, W, 3) are not accepted: a
video model is trained and queried on clips.
"""

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from jaxret.models import layers
from jaxret.models import vit

TEMPORAL = ('mean', 'transformer')
# The video tower's own parameters, beside the frame ViT's: what an image tower lacks.
OWN_PARAMS = ('time_embedding', 'temporal_cls', 'temporal_encoder', 'temporal_norm')


class VideoViT(vit.ViT):
  """ViT per frame plus temporal modelling. Returns `(pooled, intermediates)` like the
  ViT, with `patch_tokens` and `encoded` over space-time (B, T·tokens, D) and
  `frame_vectors` (B, T, D), each frame's pooled vector with its time embedding."""
  temporal: str = 'transformer'
  temporal_depth: int = 1
  max_frames: int = 16

  @nn.compact
  def __call__(self, videos, *, train=False):
    if self.temporal not in TEMPORAL:
      raise ValueError(f'unknown temporal modelling {self.temporal!r}; known: {TEMPORAL}')
    if videos.ndim != 5:
      raise ValueError(f'the video tower takes (B, T, H, W, 3) clips, got shape {videos.shape}')
    batch, frames = videos.shape[:2]
    if frames > self.max_frames:
      raise ValueError(f'{frames} frames is more than the tower\'s max_frames={self.max_frames}')
    pooled, frame_out = super().__call__(videos.reshape(batch * frames, *videos.shape[2:]),
                                         train=train)
    width = pooled.shape[-1]
    time = self.param('time_embedding', nn.initializers.normal(stddev=1 / np.sqrt(width)),
                      (1, self.max_frames, width))[:, :frames].astype(pooled.dtype)
    frame_vectors = pooled.reshape(batch, frames, width) + time

    def space_time(tokens):  # (B·T, P, D) -> (B, T·P, D), each token with its frame's time.
      tokens = tokens.reshape(batch, frames, -1, width) + time[:, :, None]
      return tokens.reshape(batch, -1, width)

    if self.temporal == 'mean':
      video = jnp.mean(frame_vectors, axis=1)
    else:
      size = self.sizes()
      cls = self.param('temporal_cls', nn.initializers.zeros, (1, 1, width))
      x = jnp.concatenate([jnp.tile(cls, (batch, 1, 1)).astype(frame_vectors.dtype),
                           frame_vectors], axis=1)
      x, _ = layers.Encoder(self.temporal_depth, size['num_heads'], size['mlp_dim'],
                            activation=self.activation, layer_norm_eps=self.layer_norm_eps,
                            dtype=layers.as_dtype(self.dtype), name='temporal_encoder')(x)
      video = nn.LayerNorm(epsilon=self.layer_norm_eps, name='temporal_norm')(x)[:, 0]
    intermediates = {'encoded': space_time(frame_out['encoded']),
                     'patch_tokens': space_time(frame_out['patch_tokens']),
                     'frame_vectors': frame_vectors, 'pre_logits': video}
    return video, intermediates

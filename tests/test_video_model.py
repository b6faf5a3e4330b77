"""The video tower: per-frame ViT with the image tower's parameter names, mean pooling blind
to frame order, the temporal transformer not; every dual-encoder model takes clips."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxret import errors
from jaxret import models
from jaxret.models import capabilities
from jaxret.models import flops
from jaxret.models import video
from jaxret.models import vit
from jaxret.train import setup
from method_configs import load_config

CLIPS = jax.random.normal(jax.random.PRNGKey(1), (2, 4, 16, 16, 3))


def _tower(temporal):
  return video.VideoViT(variant='mu/8', temporal=temporal, max_frames=4)


@pytest.mark.parametrize('temporal', video.TEMPORAL)
def test_tower_shapes_and_frame_order(temporal):
  tower = _tower(temporal)
  params = tower.init(jax.random.PRNGKey(0), CLIPS)
  image_params = vit.ViT(variant='mu/8').init(jax.random.PRNGKey(0), CLIPS[:, 0])['params']
  # The image ViT's parameters, with the same names and shapes, plus time.
  shapes = jax.tree.map(jnp.shape, params['params'])
  assert {k: shapes[k] for k in image_params} == jax.tree.map(jnp.shape, image_params)
  pooled, out = tower.apply(params, CLIPS)
  assert pooled.shape == (2, 32)
  assert out['patch_tokens'].shape == (2, 4 * 4, 32)  # Space-time: 4 frames x 4 patches.
  assert out['frame_vectors'].shape == (2, 4, 32)
  # Frame by frame the image ViT's.
  frame_pooled, _ = vit.ViT(variant='mu/8').apply({'params': {
      k: params['params'][k] for k in image_params}}, CLIPS[:, 2])
  time = params['params']['time_embedding'][0, 2]
  np.testing.assert_allclose(out['frame_vectors'][:, 2], frame_pooled + time, atol=1e-5)
  reversed_pooled, _ = tower.apply(params, CLIPS[:, ::-1])
  difference = float(jnp.max(jnp.abs(reversed_pooled - pooled)))
  if temporal == 'mean':
    assert difference < 1e-5  # Averaging frames cannot see their order.
  else:
    assert difference > 1e-3


def test_too_many_frames_and_images_are_refused():
  tower = _tower('mean')
  with pytest.raises(ValueError, match='max_frames=4'):
    tower.init(jax.random.PRNGKey(0), jnp.zeros((1, 5, 16, 16, 3)))
  with pytest.raises(ValueError, match=r'\(B, T, H, W, 3\)'):
    tower.init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)))


@pytest.mark.parametrize('method', ['clip', 'filip', 'caption'])
def test_every_model_takes_clips_by_config(method):
  config = load_config('video', f'runlocal,method={method}')
  setup.check_config(config)
  model = models.build(config.model, vocab_size=20, text_len=6)
  assert isinstance(model, capabilities.VideoInput)
  clips = jnp.zeros((2, 8, 64, 64, 3))
  tokens, mask = jnp.ones((2, 6), jnp.int32), jnp.ones((2, 6), jnp.int32)
  outputs, _ = jax.eval_shape(lambda: model.init_with_output(
      jax.random.PRNGKey(0), clips, tokens, mask))[0]
  if method == 'clip':
    assert outputs['image_emb'].shape == (2, config.model.embed_dim)
  elif method == 'filip':
    assert outputs['image_tokens'].shape == (2, 8 * 16, config.model.embed_dim)
  else:
    assert outputs['log_p_forward'].shape == (2,)


def test_video_data_needs_a_video_tower_and_a_model_that_takes_clips():
  config = load_config('video', 'runlocal')
  config.model.image = ml_collections.ConfigDict({'variant': 'mu/16', 'pool': 'cls'})
  with pytest.raises(errors.UserError, match='needs a video tower'):
    setup.check_config(config)
  albef = models.build(load_config('albef', 'runlocal').model, vocab_size=20, text_len=6)
  with pytest.raises(errors.UserError, match='capabilities.VideoInput; model Albef is not'):
    capabilities.require(albef, capabilities.VideoInput, 'video data')


def test_flops_count_every_frame_and_the_temporal_transformer():
  config = load_config('video', 'runlocal')
  per_frame = flops.vit_flops('mu/16', 64, depth=1)
  transformer = flops.dual_encoder_train_flops(config.model, 64, 24, 8)
  config.model.image.temporal = 'mean'
  mean = flops.dual_encoder_train_flops(config.model, 64, 24, 8)
  one_frame = flops.dual_encoder_train_flops(config.model, 64, 24, 1)
  assert mean - one_frame == 3 * 7 * per_frame
  assert transformer - mean == 3 * flops.transformer_flops(9, 32, 1, 128)

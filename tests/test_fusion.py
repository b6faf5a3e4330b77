"""The fusion encoder (cross-attention block) and the ALBEF model's methods."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxret.models import albef
from jaxret.models import fusion
from jaxret.models import layers


def _fusion_inputs():
  rng = np.random.default_rng(0)
  text = rng.normal(size=(2, 6, 32)).astype(np.float32)
  mask = np.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], np.int32)
  image = rng.normal(size=(2, 5, 48)).astype(np.float32)  # Another width than the text.
  return text, mask, image


@pytest.mark.parametrize('prenorm', [True, False])
def test_fusion_ignores_padding_and_reads_the_image(prenorm):
  text, mask, image = _fusion_inputs()
  model = fusion.FusionEncoder(variant='mu', depth=2, prenorm=prenorm)
  params = jax.jit(model.init)(jax.random.key(0), text, mask, image)
  apply = jax.jit(model.apply)
  fused, out = apply(params, text, mask, image)
  assert fused.shape == (2, 6, 32) and 'block01' in out
  padded = text.copy()
  padded[0, 4:] = 9.0  # Content under padding changes nothing at real positions.
  np.testing.assert_allclose(apply(params, padded, mask, image)[0][0, :4], fused[0, :4],
                             atol=1e-5)
  other_image = image.copy()
  other_image[0] += 1.0  # Another image changes its own row only.
  changed = apply(params, text, mask, other_image)[0]
  assert not np.allclose(changed[0], fused[0], atol=1e-3)
  np.testing.assert_allclose(changed[1], fused[1], atol=1e-6)
  block = params['params']['block00']
  assert block['cross_attention']['key']['kernel'].shape == (48, 2, 16)


def test_fusion_width_must_match_the_text():
  text, mask, image = _fusion_inputs()
  with pytest.raises(ValueError, match='use the text tower'):
    fusion.FusionEncoder(variant='nano', depth=1).init(jax.random.key(0), text, mask, image)


def test_cross_attention_block_keeps_existing_blocks_unchanged():
  """The additive layer is its own class; EncoderBlock's parameters are as before."""
  x = jnp.ones((1, 3, 32))
  params = layers.EncoderBlock(2, 64).init(jax.random.key(0), x)['params']
  assert sorted(params) == ['attention', 'mlp', 'norm1', 'norm2']
  cross = layers.CrossAttentionBlock(2, 64).init(jax.random.key(0), x, jnp.ones((1, 4, 8)))
  assert sorted(cross['params']) == ['attention', 'cross_attention', 'cross_norm', 'mlp', 'norm1',
                                     'norm2']


@pytest.fixture(scope='module')
def tiny_albef():
  model = albef.Albef(vocab_size=40, text_len=8, image={'variant': 'mu/8'},
                      text={'variant': 'mu', 'depth': 1}, fusion={'variant': 'mu', 'depth': 1},
                      embed_dim=16)
  images = jax.random.normal(jax.random.key(1), (3, 16, 16, 3))
  tokens = jnp.array([[2, 7, 9, 3, 0, 0, 0, 0], [2, 5, 3, 0, 0, 0, 0, 0],
                      [2, 8, 8, 8, 6, 3, 0, 0]], jnp.int32)
  mask = (tokens > 0).astype(jnp.int32)
  params = jax.jit(model.init)(jax.random.key(0), images, tokens, mask)
  return model, params, images, tokens, mask


def test_albef_outputs_and_itm_scores(tiny_albef):
  model, params, images, tokens, mask = tiny_albef
  outputs, _ = jax.jit(model.apply)(params, images, tokens, mask)
  np.testing.assert_allclose(np.linalg.norm(outputs['image_emb'], axis=1), 1, atol=1e-5)
  assert outputs['text_emb'].shape == (3, 16)
  assert outputs['itm_logits'].shape == (3, 2) and outputs['mlm_logits'].shape == (3, 8, 40)
  np.testing.assert_allclose(outputs['temperature'], 0.07, rtol=1e-6)
  image_emb, image_out = jax.jit(
      lambda p, x: model.apply(p, x, method=model.encode_image))(params, images)
  np.testing.assert_allclose(image_emb, outputs['image_emb'], atol=1e-6)
  scores = jax.jit(lambda p, *x: model.apply(p, *x, method=model.itm_scores))(
      params, image_out['encoded'], tokens, mask)
  logits = outputs['itm_logits']
  np.testing.assert_allclose(scores, logits[:, 1] - logits[:, 0], atol=1e-5)


def test_albef_temperature_is_clamped(tiny_albef):
  model, params, *_ = tiny_albef
  params = {'params': dict(params['params'])}
  temperature = jax.jit(lambda p: model.apply(p, method=model.clamped_temperature))
  for raw, clamped in ((1e-5, albef.MIN_TEMPERATURE), (3.0, albef.MAX_TEMPERATURE)):
    params['params']['temp'] = jnp.float32(raw)
    outputs = {'temperature': temperature(params)}
    np.testing.assert_allclose(outputs['temperature'], clamped, rtol=1e-6)

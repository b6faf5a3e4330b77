"""Model output shapes, parameter counts per variant, masking and pooling."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxret.models import dual_encoder
from jaxret.models import layers
from jaxret.models import text
from jaxret.models import variants
from jaxret.models import vit


def vit_param_count(width, depth, mlp, patch, image_size, cls=True):
  """ViT parameters by hand: patch conv, position embedding, CLS, blocks, final norm."""
  tokens = (image_size // patch) ** 2
  block = (4 * width * width + 3 * width  # query, key, value, out (no key bias).
           + width * mlp + mlp + mlp * width + width  # MLP.
           + 4 * width)  # Two LayerNorms.
  return (patch * patch * 3 * width + width + tokens * width + (width if cls else 0)
          + depth * block + 2 * width)


def count(tree):
  return sum(x.size for x in jax.tree.leaves(tree))


@pytest.mark.parametrize('variant', ['mu/8', 'nano/8', 'Ti/16', 'S/16', 'B/16', 'L/14'])
def test_vit_parameter_count(variant):
  size = variants.decode(variant)
  image_size = 224 if size['patch_size'] != 8 else 64
  model = vit.ViT(variant=variant)
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, image_size, image_size, 3)))
  expected = vit_param_count(size['width'], size['depth'], size['mlp_dim'], size['patch_size'],
                             image_size)
  assert count(shapes) == expected
  if variant == 'B/16':  # big_vision's ViT-B/16 without head, less 12 key biases.
    assert expected == 85_797_888 - 12 * 768


@pytest.mark.parametrize('pool', vit.POOLS)
def test_vit_outputs(pool):
  model = vit.ViT(variant='mu/8', pool=pool)
  images = jnp.ones((2, 32, 32, 3))
  params = model.init(jax.random.key(0), images)
  pooled, out = model.apply(params, images)
  assert pooled.shape == (2, 32)
  assert out['patch_tokens'].shape == (2, 16, 32)  # CLS excluded.
  assert out['encoded'].shape == (2, 17 if pool == 'cls' else 16, 32)
  assert 'block00' in out


@pytest.mark.parametrize('use_bias', [True, False])
def test_patch_embedding_is_the_strided_convolution(use_bias):
  """Same parameters (names, shapes, initial values) and the same function and kernel
  gradient as a convolution with stride = kernel size, the ViT's former patch embedding."""
  images = jax.random.normal(jax.random.key(1), (2, 16, 24, 3))
  conv = nn.Conv(5, (8, 8), strides=(8, 8), padding='VALID', use_bias=use_bias)
  patches = layers.PatchEmbedding(5, 8, use_bias=use_bias)
  params = conv.init(jax.random.key(0), images)
  patch_params = patches.init(jax.random.key(0), images)
  assert jax.tree.map(jnp.shape, params) == jax.tree.map(jnp.shape, patch_params)
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(patch_params)):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_allclose(patches.apply(params, images), conv.apply(params, images),
                             rtol=1e-5, atol=1e-5)
  grads = [jax.grad(lambda p, m=m: jnp.sum(jnp.sin(m.apply(p, images))))(params)
           for m in (conv, patches)]
  for a, b in zip(*map(jax.tree.leaves, grads)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_patch_expansion_is_the_strided_transposed_convolution():
  """The feature pyramid's 2x upsampling: flax's ConvTranspose (kernel = stride = 2),
  with the same parameters, function and gradients."""
  grid = jax.random.normal(jax.random.key(1), (2, 3, 4, 6))
  transposed = nn.ConvTranspose(5, (2, 2), strides=(2, 2))
  expansion = layers.PatchExpansion(5, 2)
  params = transposed.init(jax.random.key(0), grid)
  expansion_params = expansion.init(jax.random.key(0), grid)
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(expansion_params)):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_allclose(expansion.apply(params, grid), transposed.apply(params, grid),
                             rtol=1e-5, atol=1e-5)
  grads = [jax.grad(lambda p, m=m: jnp.sum(jnp.sin(m.apply(p, grid))))(params)
           for m in (transposed, expansion)]
  for a, b in zip(*map(jax.tree.leaves, grads)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_vit_sincos_has_no_position_parameter():
  model = vit.ViT(variant='mu/8', posemb='sincos2d')
  params = model.init(jax.random.key(0), jnp.ones((1, 32, 32, 3)))
  assert 'pos_embedding' not in params['params']


def _text(pool, causal=False):
  return text.TextTransformer(vocab_size=50, max_len=8, variant='mu', pool=pool, causal=causal)


@pytest.mark.parametrize('pool', text.POOLS)
def test_text_ignores_padding_content(pool):
  """Whatever sits in padded positions changes nothing."""
  model = _text(pool)
  mask = jnp.array([[1, 1, 1, 1, 0, 0, 0, 0]])
  tokens_a = jnp.array([[2, 7, 9, 3, 0, 0, 0, 0]])
  tokens_b = jnp.array([[2, 7, 9, 3, 11, 12, 13, 14]])
  params = model.init(jax.random.key(0), tokens_a, mask)
  pooled_a, out_a = model.apply(params, tokens_a, mask)
  pooled_b, _ = model.apply(params, tokens_b, mask)
  np.testing.assert_allclose(pooled_a, pooled_b, atol=1e-5)
  assert out_a['tokens'].shape == (1, 8, 32)


def test_text_last_pool_takes_end_token():
  model = _text('last')
  tokens = jnp.array([[2, 7, 9, 3, 0, 0, 0, 0]])
  mask = (tokens > 0).astype(jnp.int32)
  params = model.init(jax.random.key(0), tokens, mask)
  pooled, out = model.apply(params, tokens, mask)
  np.testing.assert_allclose(pooled, out['tokens'][:, 3], atol=1e-6)


def test_text_causal_mask_hides_later_tokens():
  model = _text('first', causal=True)
  mask = jnp.ones((1, 8), jnp.int32)
  tokens_a = jnp.array([[2, 7, 9, 3, 5, 6, 8, 4]])
  tokens_b = jnp.array([[2, 7, 9, 3, 11, 12, 13, 14]])
  params = model.init(jax.random.key(0), tokens_a, mask)
  _, out_a = model.apply(params, tokens_a, mask)
  _, out_b = model.apply(params, tokens_b, mask)
  np.testing.assert_allclose(out_a['tokens'][:, :4], out_b['tokens'][:, :4], atol=1e-5)
  assert not np.allclose(out_a['tokens'][:, 4:], out_b['tokens'][:, 4:], atol=1e-3)


def test_dual_encoder_outputs():
  model = dual_encoder.DualEncoder(vocab_size=50, text_len=8, image={'variant': 'mu/8'},
                                   text={'variant': 'mu'}, embed_dim=16)
  images, tokens = jnp.ones((3, 32, 32, 3)), jnp.ones((3, 8), jnp.int32)
  params = model.init(jax.random.key(0), images, tokens, tokens)
  out, intermediates = model.apply(params, images, tokens, tokens)
  assert out['image_emb'].shape == out['text_emb'].shape == (3, 16)
  np.testing.assert_allclose(np.linalg.norm(out['image_emb'], axis=1), 1, atol=1e-5)
  np.testing.assert_allclose(np.linalg.norm(out['text_emb'], axis=1), 1, atol=1e-5)
  np.testing.assert_allclose(out['logit_scale'], 1 / 0.07, rtol=1e-5)
  assert intermediates['image']['patch_tokens'].shape == (3, 16, 32)
  assert intermediates['text']['tokens'].shape == (3, 8, 32)


def test_logit_scale_is_clamped_at_100():
  model = dual_encoder.DualEncoder(vocab_size=50, text_len=8, image={'variant': 'mu/8'},
                                   text={'variant': 'mu'}, embed_dim=16)
  images, tokens = jnp.ones((1, 32, 32, 3)), jnp.ones((1, 8), jnp.int32)
  params = model.init(jax.random.key(0), images, tokens, tokens)
  params['params']['logit_scale'] = jnp.asarray(np.log(1000.0))
  out, _ = model.apply(params, images, tokens, tokens)
  np.testing.assert_allclose(out['logit_scale'], 100.0, rtol=1e-5)


def test_unknown_variant_is_refused():
  with pytest.raises(ValueError, match='unknown model variant'):
    variants.decode('Q/16')
  with pytest.raises(ValueError, match='unknown size settings'):
    variants.decode('mu', dpeth=2)


def test_capabilities_are_declared_and_a_missing_one_is_refused_by_name():
  # pylint: disable=import-outside-toplevel
  from jaxret import errors
  from jaxret import evaluate
  from jaxret.models import albef
  from jaxret.models import capabilities
  from jaxret.models import late_interaction
  from jaxret.models import slow
  towers = {'vocab_size': 10, 'text_len': 8, 'image': {'variant': 'mu/8'}}
  dual = dual_encoder.DualEncoder(**towers, text={'variant': 'mu'})
  declared = [
      (dual, {capabilities.PooledEncoder}),
      (late_interaction.LateInteractionDualEncoder(**towers, text={'variant': 'mu'}),
       {capabilities.PooledEncoder, capabilities.TokenEncoder}),
      (albef.Albef(**towers, text={'variant': 'mu'}, fusion={'variant': 'mu'}),
       {capabilities.PooledEncoder, capabilities.PairScorer}),
      (slow.SlowCaptioner(**towers, decoder={'variant': 'mu'}), {capabilities.PairScorer}),
  ]
  every = (capabilities.PooledEncoder, capabilities.TokenEncoder, capabilities.PairScorer)
  for model, expected in declared:
    assert {c for c in every if isinstance(model, c)} == expected, type(model).__name__
  with pytest.raises(errors.UserError, match=r'the slow_retrieval evaluator needs a model that '
                     r'is a capabilities\.PairScorer \(score, visual_tokens\); model '
                     r'DualEncoder is not'):
    evaluate.check_model('slow_retrieval', dual)
  evaluate.check_model('retrieval', dual)

  class Undeclared(capabilities.PooledEncoder):  # Declares a capability it does not have.
    pass

  with pytest.raises(TypeError, match='abstract'):
    Undeclared()


def test_scanned_layers_compute_the_same_function():
  images = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
  plain = vit.ViT(variant='mu/8', depth=3)
  scanned = vit.ViT(variant='mu/8', depth=3, scan=True, remat_policy='full')
  params = plain.init(jax.random.key(0), images)['params']
  stacked = dict(params)
  blocks = [params['encoder'][f'block{i:02d}'] for i in range(3)]
  stacked['encoder'] = {'blocks': jax.tree.map(lambda *x: jnp.stack(x), *blocks)}
  out_plain, inter_plain = plain.apply({'params': params}, images)
  out_scanned, inter_scanned = scanned.apply({'params': stacked}, images)
  np.testing.assert_allclose(out_plain, out_scanned, atol=1e-5)
  np.testing.assert_allclose(inter_plain['block01'], inter_scanned['block01'], atol=1e-5)


def test_flop_count_matches_xla_cost_analysis():
  """The configuration-based count (matrix products only) against XLA's own count."""
  from jaxret.models import flops  # pylint: disable=import-outside-toplevel
  model = vit.ViT(variant='nano/8')
  images = jnp.ones((4, 64, 64, 3))
  params = model.init(jax.random.key(0), images)
  compiled = jax.jit(lambda p, x: model.apply(p, x)[0]).lower(params, images).compile()
  analysis = compiled.cost_analysis()
  analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
  counted = 4 * flops.vit_flops('nano/8', 64)
  assert 0.9 * analysis['flops'] <= counted <= 1.02 * analysis['flops']

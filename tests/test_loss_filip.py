"""FILIP's late interaction, token selection and loss against NumPy; sharded over 8
devices; the late-interaction model and its evaluation."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxret.data import sources
from jaxret.data import tokenizer as tokenizer_lib
from jaxret.evaluate import recall
from jaxret.evaluate import retrieval
from jaxret.losses import filip
from jaxret.parallel import mesh as mesh_lib
from jaxret.parallel import shard
from jaxret.train import setup
from method_configs import tiny_config


# ---------------------------------------------------------------- NumPy reference

def numpy_similarities(image_tokens, text_tokens, text_mask):
  """(image→text (Ni, Nt), text→image (Nt, Ni)), pair by pair, padding dropped."""
  image_tokens, text_tokens = np.float64(image_tokens), np.float64(text_tokens)
  i2t = np.zeros((len(image_tokens), len(text_tokens)))
  t2i = np.zeros((len(text_tokens), len(image_tokens)))
  for i, patches in enumerate(image_tokens):
    for j, (words, mask) in enumerate(zip(text_tokens, text_mask)):
      real = words[mask > 0]
      sim = patches @ real.T  # (P, real tokens)
      i2t[i, j] = sim.max(axis=1).mean()
      t2i[j, i] = sim.max(axis=0).mean()
  return i2t, t2i


def numpy_filip_loss(image_tokens, text_tokens, text_mask, image_ids, scale):
  i2t, t2i = numpy_similarities(image_tokens, text_tokens, text_mask)
  same = (image_ids[:, None] == image_ids[None, :]).astype(np.float64)
  targets = same / same.sum(1, keepdims=True)
  total = 0.0
  for logits in (scale * i2t, scale * t2i):
    logits = logits - logits.max(1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    total += -(targets * log_probs).sum() / len(logits)
  return total / 2


def numpy_select(image_tokens, text_tokens, text_mask, fraction, group):
  """Per group: patch score = max over the group's real text tokens; text token
  score = max over the group's patches; keep the top ceil(fraction · count)."""
  kept_images, kept_texts = [], []
  for start in range(0, len(image_tokens), group):
    images = np.float64(image_tokens[start:start + group])
    texts = np.float64(text_tokens[start:start + group])
    masks = text_mask[start:start + group]
    real_words = np.concatenate([t[m > 0] for t, m in zip(texts, masks)])
    all_patches = images.reshape(-1, images.shape[-1])
    for patches in images:
      score = (patches @ real_words.T).max(axis=1)
      keep = np.argsort(-score, kind='stable')[:math.ceil(fraction * len(patches))]
      kept_images.append(sorted(keep.tolist()))
    for words, mask in zip(texts, masks):
      real = np.flatnonzero(mask > 0)
      score = (words[real] @ all_patches.T).max(axis=1)
      keep = real[np.argsort(-score, kind='stable')[:math.ceil(fraction * len(real))]]
      kept_texts.append(sorted(keep.tolist()))
  return kept_images, kept_texts


def _unit(x):
  return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _inputs(n=8, patches=6, length=7, d=5, seed=0, duplicates=True):
  """Unit tokens; texts with 2..length real tokens, padding vectors that would
  win every max (copies of patch 0) if they were not masked."""
  rng = np.random.default_rng(seed)
  image_tokens = _unit(rng.normal(size=(n, patches, d)))
  text_tokens = _unit(rng.normal(size=(n, length, d)))
  real = rng.integers(2, length + 1, size=n)
  text_mask = (np.arange(length)[None, :] < real[:, None]).astype(np.int32)
  text_tokens[text_mask == 0] = image_tokens[0, 0]
  ids = np.arange(n, dtype=np.int32)
  if duplicates:
    ids[3] = ids[1]
    ids[n - 1] = ids[n - 2] = ids[2]
  return image_tokens, text_tokens, text_mask, ids


# ---------------------------------------------------------------- similarities

def test_similarities_match_numpy_and_ignore_padding():
  image_tokens, text_tokens, text_mask, _ = _inputs()
  i2t = filip.image_to_text_similarity(image_tokens, text_tokens, text_mask)
  t2i = filip.text_to_image_similarity(text_tokens, text_mask, image_tokens)
  expected_i2t, expected_t2i = numpy_similarities(image_tokens, text_tokens, text_mask)
  np.testing.assert_allclose(i2t, expected_i2t, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(t2i, expected_t2i, rtol=1e-5, atol=1e-6)
  # The padding vectors equal patch 0 of image 0: had one entered, image 0
  # would score 1 on that patch against every padded text.
  padded = text_mask.sum(1) < text_mask.shape[1]
  assert np.all(np.asarray(i2t)[0, padded] < 1 - 1e-3)
  # The two directions are different scores, not transposes.
  assert not np.allclose(i2t, np.asarray(t2i).T, atol=1e-3)


def test_gallery_scores_equal_the_two_directions():
  image_tokens, text_tokens, text_mask, _ = _inputs(n=11)
  t2i, i2t = filip.late_interaction_scores(image_tokens, text_tokens, text_mask, chunk=4)
  np.testing.assert_allclose(
      t2i, filip.text_to_image_similarity(text_tokens, text_mask, image_tokens), atol=1e-6)
  np.testing.assert_allclose(
      i2t, filip.image_to_text_similarity(image_tokens, text_tokens, text_mask), atol=1e-6)


def test_text_without_real_tokens_scores_zero_not_nan():
  image_tokens, text_tokens, text_mask, _ = _inputs(n=3, duplicates=False)
  text_mask[1] = 0
  i2t = filip.image_to_text_similarity(image_tokens, text_tokens, text_mask)
  t2i = filip.text_to_image_similarity(text_tokens, text_mask, image_tokens)
  assert np.all(np.asarray(i2t)[:, 1] == 0) and np.all(np.asarray(t2i)[1] == 0)


# ---------------------------------------------------------------- token selection

@pytest.mark.parametrize('fraction, group', [(0.5, 4), (0.25, 2), (0.6, 8)])
def test_token_selection_matches_numpy(fraction, group):
  image_tokens, text_tokens, text_mask, _ = _inputs(n=8, patches=8, length=9)
  images, texts, mask = filip.select_top_tokens(image_tokens, text_tokens, text_mask,
                                                fraction, group)
  kept_images, kept_texts = numpy_select(image_tokens, text_tokens, text_mask, fraction, group)
  assert images.shape[1] == math.ceil(fraction * 8) and texts.shape[1] == math.ceil(fraction * 9)
  # The same sets of tokens (kept in order of score, so compared as sets).
  for i, keep in enumerate(kept_images):
    assert sorted(_indices_of(image_tokens[i], np.asarray(images[i]))) == keep
  for j, keep in enumerate(kept_texts):
    chosen = np.asarray(texts[j])[np.asarray(mask[j]) > 0]
    assert sorted(_indices_of(text_tokens[j], chosen)) == keep


def _indices_of(tokens, chosen):
  """Row of `tokens` each of `chosen` is (exact copies)."""
  indices = [int(np.argmin(np.abs(tokens - row).sum(1))) for row in chosen]
  np.testing.assert_array_equal(tokens[indices], chosen)
  return indices


def test_token_selection_refuses_a_group_that_does_not_divide_the_batch():
  image_tokens, text_tokens, text_mask, _ = _inputs(n=6)
  with pytest.raises(Exception, match='selection_group'):
    filip.select_top_tokens(image_tokens, text_tokens, text_mask, 0.5, 4)


# ---------------------------------------------------------------- the loss

@pytest.mark.parametrize('duplicates', [False, True])
def test_loss_matches_numpy(duplicates):
  image_tokens, text_tokens, text_mask, ids = _inputs(duplicates=duplicates)
  loss, metrics = filip.filip_loss(image_tokens, text_tokens, text_mask, ids, jnp.float32(9.0))
  np.testing.assert_allclose(loss, numpy_filip_loss(image_tokens, text_tokens, text_mask, ids,
                                                    9.0), rtol=1e-5, atol=1e-5)
  # Top-1 is right when the best column has the row's image id (not only the diagonal).
  i2t, t2i = numpy_similarities(image_tokens, text_tokens, text_mask)
  for name, scores in (('i2t_top1', i2t), ('t2i_top1', t2i)):
    expected = np.mean(ids[np.argmax(scores, axis=1)] == ids)
    np.testing.assert_allclose(metrics[name], expected, rtol=1e-6)


def test_gradient_matches_finite_differences():
  image_tokens, text_tokens, text_mask, ids = _inputs(n=4, patches=3, length=4, d=3)
  with jax.enable_x64(True):
    image_tokens, text_tokens = np.float64(image_tokens), np.float64(text_tokens)
    grads = jax.grad(lambda x, y: filip.filip_loss(x, y, text_mask, ids, 5.0)[0],
                     argnums=(0, 1))(image_tokens, text_tokens)
    for argnum, x in enumerate((image_tokens, text_tokens)):
      numeric = np.zeros_like(x)
      for index in np.ndindex(*x.shape):
        args = [image_tokens.copy(), text_tokens.copy()]
        args[argnum][index] += 1e-6
        plus = numpy_filip_loss(*args, text_mask, ids, 5.0)
        args[argnum][index] -= 2e-6
        minus = numpy_filip_loss(*args, text_mask, ids, 5.0)
        numeric[index] = (plus - minus) / 2e-6
      np.testing.assert_allclose(grads[argnum], numeric, rtol=1e-5, atol=1e-6)
  # Padding tokens get no gradient.
  assert np.all(np.asarray(grads[1])[text_mask == 0] == 0)


@pytest.mark.parametrize('keep_fraction, group', [(1.0, 1), (0.5, 4)])
def test_sharded_equals_single_device_with_gradients(keep_fraction, group):
  """All-gathered tokens with gradient; with selection, groups of 4 = one device's
  rows, so 8 devices and one choose the same tokens."""
  image_tokens, text_tokens, text_mask, ids = _inputs(n=32, patches=6, length=7)
  mesh = mesh_lib.make_mesh()

  def loss(axis_name=None, **arguments):
    return filip.filip_loss(**arguments, keep_fraction=keep_fraction, selection_group=group,
                            axis_name=axis_name)

  sharded = shard.over_batch(loss, mesh, replicated=('logit_scale',))

  def value_and_grads(fn):
    return jax.jit(jax.value_and_grad(
        lambda x, y, s: fn(image_tokens=x, text_tokens=y, text_mask=text_mask, image_ids=ids,
                           logit_scale=s)[0], argnums=(0, 1, 2)))

  single = value_and_grads(loss)(image_tokens, text_tokens, jnp.float32(8.0))
  multi = value_and_grads(sharded)(image_tokens, text_tokens, jnp.float32(8.0))
  for a, b in zip(jax.tree.leaves(single), jax.tree.leaves(multi)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- model and evaluation

@pytest.fixture(scope='module')
def trained_free_filip():
  """The tiny FILIP config's model with its initial parameters, and the val split."""
  config = tiny_config('filip')
  records = sources.load_split(config.data, 'val')
  train = sources.load_split(config.data, 'train')
  tokenizer = tokenizer_lib.build_word_level(
      (t for caps in train.captions for t in caps), config.data.text_len)
  mesh = mesh_lib.make_mesh()
  trainable = setup.Trainable(config, tokenizer, mesh)
  params = trainable.init_state().params
  return config, trainable.model, params, records, tokenizer, mesh


def test_model_gives_unit_patch_tokens_without_cls_and_zeroed_padding(trained_free_filip):
  config, model, params, records, tokenizer, _ = trained_free_filip
  images = np.zeros((2, config.data.image_size, config.data.image_size, 3), np.float32)
  tokens, mask = tokenizer.encode(records.captions[0][:2])
  outputs, _ = jax.jit(model.apply)({'params': jax.device_get(params)}, images, tokens, mask)
  patches = (config.data.image_size // 8) ** 2  # mu/8: the patch grid, no CLS.
  assert outputs['image_tokens'].shape == (2, patches, config.model.embed_dim)
  np.testing.assert_allclose(np.linalg.norm(outputs['image_tokens'], axis=-1), 1, atol=1e-5)
  norms = np.linalg.norm(outputs['text_tokens'], axis=-1)
  np.testing.assert_allclose(norms[mask > 0], 1, atol=1e-5)
  assert np.all(norms[mask == 0] == 0)


def test_evaluator_scores_token_wise_and_reports_the_pooled_vectors(trained_free_filip):
  config, model, params, records, tokenizer, mesh = trained_free_filip
  results = retrieval.RetrievalEvaluator(model, mesh, records, tokenizer, config)(params)
  host_params = jax.device_get(params)
  image_index, texts = records.pairs()
  tokens, mask = tokenizer.encode(texts)
  apply = jax.jit(model.apply, static_argnames='method')
  image_tokens = apply({'params': host_params}, records.images.astype(np.float32) / 127.5 - 1,
                       method=model.encode_image_tokens)[0]
  text_tokens = apply({'params': host_params}, tokens, mask, method=model.encode_text_tokens)[0]
  i2t, t2i = numpy_similarities(image_tokens, text_tokens, mask)
  expected = recall.metrics_from_scores(t2i, records.image_ids,
                                        records.image_ids[image_index], i2t)
  for key, value in expected.items():
    assert results[key] == pytest.approx(value, abs=1e-6), key
  assert 'pooled/t2i/R@1' in results

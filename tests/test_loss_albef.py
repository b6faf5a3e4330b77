"""ALBEF's losses against independent NumPy formulas: ITC with queue and
momentum distillation, ITM with hard negatives, MLM masking and loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxret import errors
from jaxret.losses import albef
from jaxret.losses import itm
from jaxret.losses import mlm
from jaxret.losses import queue as queue_lib
from jaxret.parallel import mesh as mesh_lib
from jaxret.parallel import shard


def _log_softmax(x):
  x = x - x.max(axis=-1, keepdims=True)
  return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def numpy_itc(image, text, image_m, text_m, ids, image_queue, text_queue, queue_ids, temp, alpha):
  """½ mean over rows of H(α softmax(momentum sims) + (1−α) same-id, softmax(sims)),
  over the batch's momentum keys and the written queue slots only."""
  written = queue_ids != queue_lib.EMPTY_ID
  key_ids = np.concatenate([ids, queue_ids[written]])
  same = (ids[:, None] == key_ids[None, :]).astype(np.float64)
  same /= same.sum(axis=1, keepdims=True)
  total = 0.0
  for query, query_m, keys in ((image, image_m, np.vstack([text_m, text_queue[written]])),
                               (text, text_m, np.vstack([image_m, image_queue[written]]))):
    logits = np.float64(query) @ np.float64(keys).T / temp
    teacher = np.exp(_log_softmax(np.float64(query_m) @ np.float64(keys).T / temp))
    targets = alpha * teacher + (1 - alpha) * same
    total += -(targets * _log_softmax(logits)).sum() / len(ids)
  return total / 2


def _unit(rng, *shape):
  x = rng.normal(size=shape).astype(np.float32)
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _itc_inputs(n=16, d=8, k=32, written=20, seed=0):
  rng = np.random.default_rng(seed)
  image, text, image_m, text_m = (_unit(rng, n, d) for _ in range(4))
  ids = np.arange(100, 100 + n, dtype=np.int32)
  ids[3] = ids[1]  # Two captions of one image in the batch.
  ids[n - 1] = ids[n - 2] = ids[2]  # Three of another.
  image_queue, text_queue = _unit(rng, k, d), _unit(rng, k, d)
  queue_ids = rng.integers(0, 1000, size=k).astype(np.int32)
  queue_ids[:3] = ids[[0, 1, n - 1]]  # Queued copies of images in the batch: positives.
  queue_ids[written:] = queue_lib.EMPTY_ID  # Never-written slots.
  image_queue[written:] = text_queue[written:] = 0.0
  return image, text, image_m, text_m, ids, image_queue, text_queue, queue_ids


@pytest.mark.parametrize('alpha', [0.0, 0.4, 1.0])
def test_itc_matches_numpy(alpha):
  inputs = _itc_inputs()
  loss, metrics = albef.itc_loss(*inputs, jnp.float32(0.07), jnp.float32(alpha))
  np.testing.assert_allclose(loss, numpy_itc(*inputs, 0.07, alpha), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(metrics['queue_fill'], 20 / 32)


def test_itc_empty_slots_change_nothing_whatever_they_hold():
  inputs = list(_itc_inputs())
  loss, _ = albef.itc_loss(*inputs, 0.1, 0.4)
  inputs[5] = inputs[5].copy()
  inputs[5][25:] = 1.0  # Garbage in empty slots ...
  inputs[6] = -np.ones_like(inputs[6])  # ... and in every text slot, written ones included.
  inputs[7] = np.full_like(inputs[7], queue_lib.EMPTY_ID)  # All slots empty.
  empty_queue, _ = albef.itc_loss(*inputs, 0.1, 0.4)
  image, text, image_m, text_m, ids = inputs[:5]
  no_queue, _ = albef.itc_loss(image, text, image_m, text_m, ids, image_m[:0], text_m[:0],
                               ids[:0], 0.1, 0.4)
  np.testing.assert_allclose(empty_queue, no_queue, rtol=1e-6)
  assert abs(float(loss) - float(empty_queue)) > 1e-3


def test_itc_with_alpha_zero_and_no_queue_is_clip_on_momentum_keys():
  """Batch-only keys, α = 0: InfoNCE of online queries against momentum keys."""
  image, text, image_m, text_m, ids, *_ = _itc_inputs()
  loss, _ = albef.itc_loss(image, text, image_m, text_m, ids, image_m[:0], text_m[:0], ids[:0],
                           0.05, 0.0)
  same = (ids[:, None] == ids[None, :]) / (ids[:, None] == ids[None, :]).sum(1, keepdims=True)
  expected = -0.5 * ((same * _log_softmax(image @ text_m.T / 0.05)).sum(1).mean()
                     + (same * _log_softmax(text @ image_m.T / 0.05)).sum(1).mean())
  np.testing.assert_allclose(loss, expected, rtol=1e-5)


def test_itc_gradient_matches_finite_differences():
  image, text, image_m, text_m, ids, image_queue, text_queue, queue_ids = (
      _itc_inputs(n=5, d=3, k=6, written=4))
  args = [np.float64(a) if a.dtype == np.float32 else a
          for a in (image, text, image_m, text_m, ids, image_queue, text_queue, queue_ids)]

  def reference(image_, text_, temp_):
    return numpy_itc(image_, text_, *args[2:], temp_, 0.4)

  with jax.enable_x64(True):
    grads = jax.grad(lambda x, y, t: albef.itc_loss(x, y, *args[2:], t, 0.4)[0],
                     argnums=(0, 1, 2))(args[0], args[1], 0.2)
    eps = 1e-6
    for argnum, grad in enumerate(grads[:2]):
      numeric = np.zeros_like(grad)
      for index in np.ndindex(*grad.shape):
        plus, minus = [args[0].copy(), args[1].copy()], [args[0].copy(), args[1].copy()]
        plus[argnum][index] += eps
        minus[argnum][index] -= eps
        numeric[index] = (reference(*plus, 0.2) - reference(*minus, 0.2)) / (2 * eps)
      np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-6)
    numeric_temp = (reference(args[0], args[1], 0.2 + eps)
                    - reference(args[0], args[1], 0.2 - eps)) / (2 * eps)
    # Targets are constants: the momentum sims' dependence on τ carries no gradient.
    assert not np.isclose(grads[2], numeric_temp, rtol=1e-3)
    with_fixed_targets = jax.grad(
        lambda t: albef.itc_loss(args[0], args[1], *args[2:], t, 0.0)[0])(0.2)
    numeric_fixed = (numpy_itc(args[0], args[1], *args[2:], 0.2 + eps, 0.0)
                     - numpy_itc(args[0], args[1], *args[2:], 0.2 - eps, 0.0)) / (2 * eps)
    np.testing.assert_allclose(with_fixed_targets, numeric_fixed, rtol=1e-5)


def test_itc_sharded_equals_single_device_with_gradients():
  inputs = _itc_inputs(n=32, k=64, written=40)
  mesh = mesh_lib.make_mesh()
  sharded = shard.over_batch(
      albef.itc_loss, mesh,
      replicated=('image_queue', 'text_queue', 'queue_ids', 'temperature', 'alpha'))
  names = ('image_emb', 'text_emb', 'image_emb_m', 'text_emb_m', 'image_ids', 'image_queue',
           'text_queue', 'queue_ids', 'temperature', 'alpha')

  def loss_of(fn):
    return jax.jit(jax.value_and_grad(
        lambda x, y, t: fn(**dict(zip(names, (x, y, *inputs[2:], t, 0.4))))[0],
        argnums=(0, 1, 2)))

  single = loss_of(albef.itc_loss)(inputs[0], inputs[1], jnp.float32(0.07))
  multi = loss_of(sharded)(inputs[0], inputs[1], jnp.float32(0.07))
  for a, b in zip(jax.tree.leaves(single), jax.tree.leaves(multi)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# ITM.

def test_hard_negatives_never_share_the_image_id_and_follow_the_softmax():
  rng = np.random.default_rng(1)
  n = 8
  sims = rng.normal(size=(n, n)).astype(np.float32) * 2
  ids = np.array([0, 0, 1, 2, 2, 2, 3, 4], np.int32)
  draws = jax.vmap(lambda key: itm.sample_hard_negatives(key, sims, ids, ids)[0])(
      jax.random.split(jax.random.key(0), 20_000))
  draws = np.asarray(draws)
  assert (ids[draws] != ids[None, :]).all()
  allowed = ids[:, None] != ids[None, :]
  probs = np.where(allowed, np.exp(sims), 0)
  probs /= probs.sum(axis=1, keepdims=True)
  frequencies = np.stack([np.bincount(draws[:, i], minlength=n) for i in range(n)]) / len(draws)
  np.testing.assert_allclose(frequencies, probs, atol=0.015)


def test_hard_negatives_of_a_single_image_batch_are_flagged():
  ids = np.array([7, 7, 7], np.int32)
  indices, has_negative = itm.sample_hard_negatives(jax.random.key(0), np.zeros((3, 3)), ids, ids)
  assert not np.asarray(has_negative).any()
  assert (np.asarray(indices) == 0).all()
  ids = np.array([7, 7, 8], np.int32)
  indices, has_negative = itm.sample_hard_negatives(jax.random.key(0), np.zeros((3, 3)), ids, ids)
  indices = np.asarray(indices)
  assert np.asarray(has_negative).all() and indices[0] == indices[1] == 2 and indices[2] in (0, 1)


def test_itm_loss_matches_numpy_and_ignores_zero_weights():
  rng = np.random.default_rng(2)
  logits = rng.normal(size=(12, 2)).astype(np.float32)
  labels = np.array([1] * 4 + [0] * 8, np.int32)
  weights = np.ones(12, np.float32)
  weights[[5, 9]] = 0
  loss, metrics = itm.itm_loss(logits, labels, weights)
  nll = -_log_softmax(np.float64(logits))[np.arange(12), labels]
  np.testing.assert_allclose(loss, (weights * nll).sum() / weights.sum(), rtol=1e-6)
  changed = logits.copy()
  changed[[5, 9]] = 100.0
  np.testing.assert_allclose(itm.itm_loss(changed, labels, weights)[0], loss, rtol=1e-6)
  correct = (logits.argmax(1) == labels) * weights
  np.testing.assert_allclose(metrics['itm_accuracy'], correct.sum() / weights.sum(), rtol=1e-6)

  def reference(x):
    return (weights * -_log_softmax(x)[np.arange(12), labels]).sum() / weights.sum()

  with jax.enable_x64(True):
    grad = np.asarray(jax.grad(lambda x: itm.itm_loss(x, labels, weights)[0])(np.float64(logits)))
    eps, numeric = 1e-6, np.zeros_like(grad)
    for index in np.ndindex(*grad.shape):
      plus, minus = np.float64(logits), np.float64(logits)
      plus[index] += eps
      minus[index] -= eps
      numeric[index] = (reference(plus) - reference(minus)) / (2 * eps)
  np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-8)


def test_itm_loss_sharded_equals_single_device():
  rng = np.random.default_rng(3)
  logits = rng.normal(size=(48, 2)).astype(np.float32)
  labels = (rng.random(48) < 0.3).astype(np.int32)
  weights = (rng.random(48) < 0.8).astype(np.float32)
  sharded = shard.over_batch(itm.itm_loss, mesh_lib.make_mesh())
  single = jax.value_and_grad(lambda x: itm.itm_loss(x, labels, weights)[0])(logits)
  multi = jax.jit(jax.value_and_grad(
      lambda x: sharded(logits=x, labels=labels, weights=weights)[0]))(logits)
  for a, b in zip(single, multi):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def _albef_objective(mask_id=4, **settings):
  """An ALBEF objective on a stand-in model and tokenizer (nothing is traced)."""
  from jaxret.objectives import albef as albef_objective  # pylint: disable=import-outside-toplevel

  class Config(dict):
    __getattr__ = dict.__getitem__

  class Model:
    vocab_size = 50
    embed_dim = 8

  class Tokenizer:
    pass

  tokenizer = Tokenizer()
  tokenizer.mask_id = mask_id
  config = Config(name='albef', queue_size=4, momentum=0.995, alpha=0.4, alpha_warmup_steps=10,
                  itm_weight=1.0, mlm_weight=1.0, mlm_probability=0.15)
  config.update(settings)
  return albef_objective.AlbefObjective(
      Model(), mesh_lib.make_mesh(devices=jax.devices()[:1]), config, tokenizer)


def test_mask_id_is_the_tokenizers():
  assert _albef_objective(mask_id=7).mask_token_id == 7
  with pytest.raises(errors.UserError, match=r'needs a tokenizer with a \[MASK\] token'):
    _albef_objective(mask_id=None)
  assert _albef_objective(mask_id=None, mlm_weight=0.0).mask_token_id is None
  with pytest.raises(errors.UserError, match=r"loss.mask_token_id is not a setting of loss "
                                             r"'albef' \(its settings: queue_size, "):
    _albef_objective(mask_token_id=4)  # The key the config had before the tokenizer's id.


def test_batch_of_one_is_refused():
  objective = _albef_objective()
  batch = {'image': np.zeros((1, 8, 8, 3)), 'text': np.zeros((1, 4), np.int32),
           'text_mask': np.ones((1, 4), np.int32), 'image_id': np.zeros((1,), np.int32)}
  with pytest.raises(errors.UserError, match='global batch_size of at least 2'):
    objective({}, {}, batch, jax.random.key(0), 0)


# MLM.

def _text_batch(batch=4096, length=24, seed=0):
  rng = np.random.default_rng(seed)
  lengths = rng.integers(3, length + 1, size=batch)
  mask = (np.arange(length)[None, :] < lengths[:, None]).astype(np.int32)
  tokens = rng.integers(5, 60, size=(batch, length)).astype(np.int32) * mask
  tokens[:, 0] = 2  # [CLS]
  return tokens, mask


def test_masking_statistics_and_exclusions():
  tokens, mask = _text_batch()
  inputs, selected = mlm.mask_tokens(jax.random.key(3), tokens, mask, mask_id=4, vocab_size=60,
                                     probability=0.15)
  inputs, selected = np.asarray(inputs), np.asarray(selected)
  assert not selected[:, 0].any()  # Never [CLS] ...
  assert not selected[mask == 0].any()  # ... never padding,
  np.testing.assert_array_equal(inputs[~selected], tokens[~selected])  # and nothing else changes.
  eligible = (mask > 0).copy()
  eligible[:, 0] = False
  rate = selected.sum() / eligible.sum()
  assert abs(rate - 0.15) < 0.005, rate
  masked = inputs[selected] == 4
  unchanged = inputs[selected] == tokens[selected]
  randomised = ~masked & ~unchanged
  count = selected.sum()
  assert abs(masked.mean() - 0.8) < 0.01
  # A random replacement equals the original with probability 1/60.
  assert abs(unchanged.mean() - (0.1 + 0.1 / 60)) < 0.01
  assert abs(randomised.mean() - 0.1 * 59 / 60) < 0.01
  assert count > 5_000


def test_masking_draws_do_not_depend_on_sharding():
  tokens, mask = _text_batch(batch=64)
  mesh = mesh_lib.make_mesh()
  sharding = mesh_lib.batch_sharding(mesh)
  fn = jax.jit(lambda key, t, m: mlm.mask_tokens(key, t, m, mask_id=4, vocab_size=60))
  single = fn(jax.random.key(5), tokens, mask)
  multi = fn(jax.random.key(5), jax.device_put(tokens, sharding), jax.device_put(mask, sharding))
  for a, b in zip(single, multi):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def numpy_mlm(logits, momentum_logits, labels, selected, alpha):
  log_probs = _log_softmax(np.float64(logits))
  teacher = np.exp(_log_softmax(np.float64(momentum_logits)))
  nll = -np.take_along_axis(log_probs, labels[..., None], -1)[..., 0]
  distill = -(teacher * log_probs).sum(-1)
  per_token = (1 - alpha) * nll + alpha * distill
  return per_token[selected].mean()


@pytest.mark.parametrize('alpha', [0.0, 0.4])
def test_mlm_loss_matches_numpy(alpha):
  rng = np.random.default_rng(4)
  logits = rng.normal(size=(4, 6, 11)).astype(np.float32)
  momentum_logits = rng.normal(size=(4, 6, 11)).astype(np.float32)
  labels = rng.integers(0, 11, size=(4, 6)).astype(np.int32)
  selected = rng.random((4, 6)) < 0.3
  loss, _ = mlm.mlm_loss(logits, momentum_logits, labels, selected, alpha)
  np.testing.assert_allclose(loss, numpy_mlm(logits, momentum_logits, labels, selected, alpha),
                             rtol=1e-5)
  with jax.enable_x64(True):
    args = (np.float64(logits), np.float64(momentum_logits), labels, selected, alpha)
    grad = jax.grad(lambda x: mlm.mlm_loss(x, *args[1:])[0])(args[0])
    eps, index = 1e-6, (1, 2, 3)
    plus, minus = args[0].copy(), args[0].copy()
    plus[index] += eps
    minus[index] -= eps
    numeric = (numpy_mlm(plus, *args[1:]) - numpy_mlm(minus, *args[1:])) / (2 * eps)
    np.testing.assert_allclose(grad[index], numeric, rtol=1e-5, atol=1e-8)
    assert (np.asarray(grad)[~selected] == 0).all()

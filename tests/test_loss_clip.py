"""CLIP loss against an independent NumPy formula, on one device and sharded over 8."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxret.losses import clip
from jaxret.parallel import mesh as mesh_lib
from jaxret.parallel import shard
from test_loss_siglip import _all_eqns
from test_loss_siglip import stacked_blocks


def numpy_clip_loss(image_emb, text_emb, image_ids, scale):
  """½ mean over rows of soft-target CE, both directions; targets by image id."""
  image_emb, text_emb = np.float64(image_emb), np.float64(text_emb)
  same = (image_ids[:, None] == image_ids[None, :]).astype(np.float64)
  targets = same / same.sum(1, keepdims=True)
  total = 0.0
  for logits in (scale * image_emb @ text_emb.T, scale * text_emb @ image_emb.T):
    logits = logits - logits.max(1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    total += -(targets * log_probs).sum() / len(logits)
  return total / 2


def _inputs(n=16, d=8, seed=0, duplicates=True):
  rng = np.random.default_rng(seed)
  image = rng.normal(size=(n, d)).astype(np.float32)
  text = rng.normal(size=(n, d)).astype(np.float32)
  image /= np.linalg.norm(image, axis=1, keepdims=True)
  text /= np.linalg.norm(text, axis=1, keepdims=True)
  ids = np.arange(n, dtype=np.int32)
  if duplicates:
    ids[3] = ids[1]  # Two captions of one image ...
    ids[n - 1] = ids[n - 2] = ids[2]  # ... and three of another.
  return image, text, ids


@pytest.mark.parametrize('duplicates', [False, True])
def test_matches_numpy(duplicates):
  image, text, ids = _inputs(duplicates=duplicates)
  loss, metrics = clip.clip_loss(image, text, ids, jnp.float32(14.3))
  np.testing.assert_allclose(loss, numpy_clip_loss(image, text, ids, 14.3), rtol=1e-5, atol=1e-5)
  # Top-1 is right when the best column has the row's image id (not only the diagonal).
  rows = np.arange(len(ids))
  for name, scores in (('i2t_top1', image @ text.T), ('t2i_top1', text @ image.T)):
    expected = np.mean(ids[np.argmax(scores, axis=1)] == ids[rows])
    np.testing.assert_allclose(metrics[name], expected, rtol=1e-6)


def test_distinct_ids_equal_diagonal_cross_entropy():
  image, text, ids = _inputs(duplicates=False)
  logits = 10.0 * image @ text.T
  diag = np.arange(len(ids))
  expected = 0.5 * (-jax.nn.log_softmax(logits, 1)[diag, diag].mean()
                    - jax.nn.log_softmax(logits.T, 1)[diag, diag].mean())
  loss, _ = clip.clip_loss(image, text, ids, jnp.float32(10.0))
  np.testing.assert_allclose(loss, expected, rtol=1e-5)


def test_gradient_matches_finite_differences():
  image, text, ids = _inputs(n=6, d=4)
  image, text = np.float64(image), np.float64(text)
  with jax.enable_x64(True):
    grad = jax.grad(lambda x: clip.clip_loss(x, text, ids, 5.0)[0])(image)
    eps = 1e-6
    numeric = np.zeros_like(image)
    for index in np.ndindex(*image.shape):
      plus, minus = image.copy(), image.copy()
      plus[index] += eps
      minus[index] -= eps
      numeric[index] = (numpy_clip_loss(plus, text, ids, 5.0)
                        - numpy_clip_loss(minus, text, ids, 5.0)) / (2 * eps)
  np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-6)


def test_sharded_equals_single_device_with_gradients():
  """8 devices, each its rows against gathered columns == one device on the global batch."""
  image, text, ids = _inputs(n=32)
  mesh = mesh_lib.make_mesh()
  assert mesh.devices.size == 8
  sharded = shard.over_batch(clip.clip_loss, mesh, replicated=('logit_scale',))

  def loss_of(fn):
    return jax.jit(jax.value_and_grad(
        lambda x, y, s: fn(image_emb=x, text_emb=y, image_ids=ids, logit_scale=s)[0],
        argnums=(0, 1, 2)))

  single = loss_of(clip.clip_loss)(image, text, jnp.float32(12.0))
  multi = loss_of(sharded)(image, text, jnp.float32(12.0))
  for a, b in zip(jax.tree.leaves(single), jax.tree.leaves(multi)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  # Top-1 from the ring's running maxima equals the single device's argmax.
  single_metrics = clip.clip_loss(image, text, ids, jnp.float32(12.0))[1]
  multi_metrics = jax.jit(sharded)(image_emb=image, text_emb=text, image_ids=ids,
                                   logit_scale=jnp.float32(12.0))[1]
  for name in ('i2t_top1', 't2i_top1'):
    np.testing.assert_allclose(multi_metrics[name], single_metrics[name], rtol=1e-6)


def test_no_device_builds_more_than_a_local_block_of_logits():
  """Forward and backward: every matmul inside shard_map is at most (n x n), n = N / 8,
  and no per-device array has a dimension of the global batch (nothing is gathered)."""
  global_batch, dim = 64, 8
  image, text, ids = _inputs(n=global_batch, d=dim)
  local = global_batch // 8
  sharded = shard.over_batch(clip.clip_loss, mesh_lib.make_mesh(), replicated=('logit_scale',))
  grad_fn = jax.grad(lambda x, y, s: sharded(image_emb=x, text_emb=y, image_ids=ids,
                                             logit_scale=s)[0], argnums=(0, 1, 2))
  jaxpr = jax.make_jaxpr(grad_fn)(image, text, jnp.float32(7.0)).jaxpr
  shard_maps = [e for e in _all_eqns(jaxpr) if e.primitive.name == 'shard_map']
  assert shard_maps
  dot_shapes = set()
  for outer in shard_maps:
    for eqn in _all_eqns(outer.params['jaxpr']):
      for var in eqn.outvars:
        shape = getattr(var.aval, 'shape', ())
        assert global_batch not in shape, (eqn.primitive, shape)
        if eqn.primitive.name == 'dot_general' and len(shape) == 2 and local in shape:
          dot_shapes.add(shape)
  assert dot_shapes == {(local, local)}


def test_ring_keeps_no_block_per_step_for_the_backward_pass():
  """Each block is rematerialised in the backward pass, not stored: no (steps, n, n) array."""
  image, text, ids = _inputs(n=64, d=4)  # n = 8 rows per device, embeddings 4 wide.
  sharded = shard.over_batch(clip.clip_loss, mesh_lib.make_mesh(), replicated=('logit_scale',))
  grad_fn = jax.grad(lambda x, y, s: sharded(image_emb=x, text_emb=y, image_ids=ids,
                                             logit_scale=s)[0], argnums=(0, 1, 2))
  assert not stacked_blocks(grad_fn, (image, text, jnp.float32(7.0)), 8)

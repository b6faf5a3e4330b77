"""SigLIP's sigmoid loss against NumPy, and its chunked form over 8 devices."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxret.losses import siglip
from jaxret.parallel import mesh as mesh_lib
from jaxret.parallel import shard


def numpy_siglip_loss(image_emb, text_emb, image_ids, t, b):
  """−1/N Σ_ij log σ(z_ij (t x_i·y_j + b)), z = +1 for equal image ids, in float64."""
  logits = t * np.float64(image_emb) @ np.float64(text_emb).T + b
  z = np.where(image_ids[:, None] == image_ids[None, :], 1.0, -1.0)
  # log σ(v) = −log(1 + e^{−v}), computed stably.
  return np.sum(np.logaddexp(0.0, -z * logits)) / len(image_ids)


def _inputs(n=16, d=8, seed=0, duplicates=True):
  rng = np.random.default_rng(seed)
  image = rng.normal(size=(n, d)).astype(np.float32)
  text = rng.normal(size=(n, d)).astype(np.float32)
  image /= np.linalg.norm(image, axis=1, keepdims=True)
  text /= np.linalg.norm(text, axis=1, keepdims=True)
  ids = np.arange(n, dtype=np.int32)
  if duplicates:
    ids[3] = ids[1]  # Two captions of one image ...
    ids[n - 1] = ids[n - 2] = ids[2]  # ... and three of another (across devices when sharded).
  return image, text, ids


@pytest.mark.parametrize('duplicates', [False, True])
def test_matches_numpy(duplicates):
  image, text, ids = _inputs(duplicates=duplicates)
  loss, metrics = siglip.siglip_loss(image, text, ids, jnp.float32(10.0), jnp.float32(-10.0))
  np.testing.assert_allclose(loss, numpy_siglip_loss(image, text, ids, 10.0, -10.0),
                             rtol=1e-5, atol=1e-5)
  assert metrics['temperature'] == 10.0 and metrics['bias'] == -10.0


def test_distinct_ids_put_positives_on_the_diagonal_only():
  image, text, ids = _inputs(duplicates=False)
  logits = 3.0 * image @ text.T - 1.0
  labels = 2 * np.eye(len(ids)) - 1
  expected = -np.sum(jax.nn.log_sigmoid(labels * logits)) / len(ids)
  loss, _ = siglip.siglip_loss(image, text, ids, jnp.float32(3.0), jnp.float32(-1.0))
  np.testing.assert_allclose(loss, expected, rtol=1e-5)


def test_gradient_matches_finite_differences():
  image, text, ids = _inputs(n=6, d=4)
  image, text = np.float64(image), np.float64(text)
  with jax.enable_x64(True):
    grads = jax.grad(lambda x, t, b: siglip.siglip_loss(x, text, ids, t, b)[0],
                     argnums=(0, 1, 2))(image, 4.0, -2.0)
    eps = 1e-6
    numeric = np.zeros_like(image)
    for index in np.ndindex(*image.shape):
      plus, minus = image.copy(), image.copy()
      plus[index] += eps
      minus[index] -= eps
      numeric[index] = (numpy_siglip_loss(plus, text, ids, 4.0, -2.0)
                        - numpy_siglip_loss(minus, text, ids, 4.0, -2.0)) / (2 * eps)
    numeric_t = (numpy_siglip_loss(image, text, ids, 4.0 + eps, -2.0)
                 - numpy_siglip_loss(image, text, ids, 4.0 - eps, -2.0)) / (2 * eps)
    numeric_b = (numpy_siglip_loss(image, text, ids, 4.0, -2.0 + eps)
                 - numpy_siglip_loss(image, text, ids, 4.0, -2.0 - eps)) / (2 * eps)
  np.testing.assert_allclose(grads[0], numeric, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(grads[1], numeric_t, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(grads[2], numeric_b, rtol=1e-5, atol=1e-6)


def _sharded_loss(mesh):
  """The sharded loss, called positionally like `siglip_loss`."""
  sharded = shard.over_batch(siglip.siglip_loss, mesh, replicated=('temperature', 'bias'))
  return lambda image, text, ids, t, b: sharded(image_emb=image, text_emb=text, image_ids=ids,
                                                temperature=t, bias=b)


def test_chunked_over_eight_devices_equals_single_device_with_gradients():
  image, text, ids = _inputs(n=32)
  mesh = mesh_lib.make_mesh()
  assert mesh.devices.size == 8

  def value_and_grads(fn):
    return jax.jit(jax.value_and_grad(lambda x, y, t, b: fn(x, y, ids, t, b)[0],
                                      argnums=(0, 1, 2, 3)))

  args = (image, text, jnp.float32(7.0), jnp.float32(-3.0))
  single = value_and_grads(siglip.siglip_loss)(*args)
  multi = value_and_grads(_sharded_loss(mesh))(*args)
  for a, b in zip(jax.tree.leaves(single), jax.tree.leaves(multi)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_two_axis_mesh_rotates_over_both_axes():
  image, text, ids = _inputs(n=32, seed=1)
  mesh = mesh_lib.make_mesh((('data', 2), ('fsdp', 4)))
  args = (image, text, ids, jnp.float32(7.0), jnp.float32(-3.0))
  np.testing.assert_allclose(jax.jit(_sharded_loss(mesh))(*args)[0],
                             siglip.siglip_loss(*args)[0], rtol=1e-5)


def _all_eqns(jaxpr):
  for eqn in jaxpr.eqns:
    yield eqn
    for param in eqn.params.values():
      for sub in param if isinstance(param, (list, tuple)) else (param,):
        inner = getattr(sub, 'jaxpr', sub)
        if hasattr(inner, 'eqns'):
          yield from _all_eqns(inner)


def test_no_device_builds_more_than_a_local_block_of_logits():
  """Forward and backward: every matmul inside shard_map is (n x n), n = N / 8,
  and no per-device array has a dimension of the global batch."""
  global_batch, dim = 64, 8
  image, text, ids = _inputs(n=global_batch, d=dim)
  local = global_batch // 8
  sharded = _sharded_loss(mesh_lib.make_mesh())
  grad_fn = jax.grad(lambda x, y, t, b: sharded(x, y, ids, t, b)[0], argnums=(0, 1, 2, 3))
  jaxpr = jax.make_jaxpr(grad_fn)(image, text, jnp.float32(7.0), jnp.float32(-3.0)).jaxpr
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


def stacked_blocks(grad_fn, args, local):
  """Shapes of the arrays inside shard_map's traced gradient program that stack several
  (n × n) blocks, (k, n, n): a ring loop keeping every step's block for the backward pass."""
  jaxpr = jax.make_jaxpr(grad_fn)(*args).jaxpr
  shard_maps = [e for e in _all_eqns(jaxpr) if e.primitive.name == 'shard_map']
  assert shard_maps
  return {var.aval.shape for outer in shard_maps for eqn in _all_eqns(outer.params['jaxpr'])
          for var in eqn.outvars
          if len(getattr(var.aval, 'shape', ())) > 2 and var.aval.shape[-2:] == (local, local)}


def test_ring_keeps_no_block_per_step_for_the_backward_pass():
  """Each block is rematerialised in the backward pass, not stored: no (steps, n, n) array."""
  image, text, ids = _inputs(n=64, d=4)  # n = 8 rows per device, embeddings 4 wide.
  sharded = _sharded_loss(mesh_lib.make_mesh())
  grad_fn = jax.grad(lambda x, y, t, b: sharded(x, y, ids, t, b)[0], argnums=(0, 1, 2, 3))
  assert not stacked_blocks(grad_fn, (image, text, jnp.float32(7.0), jnp.float32(-3.0)), 8)

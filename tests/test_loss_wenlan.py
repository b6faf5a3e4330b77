"""WenLan/MoCo InfoNCE against an independent NumPy formula (queue masks,
duplicate ids, empty slots), its gradient, and sharded equality."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxret.losses import wenlan
from jaxret.losses import queue as queue_lib
from jaxret.parallel import mesh as mesh_lib
from jaxret.parallel import shard


def numpy_moco(queries, keys, ids, queue, queue_ids, temp, exclude_same_id=True):
  """Mean over queries of −log softmax([q·k₊, q·Q_j for usable j])[0], by loops."""
  total = 0.0
  for q, k, query_id in zip(np.float64(queries), np.float64(keys), ids):
    logits = [q @ k / temp]
    for entry, entry_id in zip(np.float64(queue), queue_ids):
      if entry_id == queue_lib.EMPTY_ID or (exclude_same_id and entry_id == query_id):
        continue
      logits.append(q @ entry / temp)
    logits = np.array(logits)
    top = logits.max()
    total += -(logits[0] - top - np.log(np.exp(logits - top).sum()))
  return total / len(queries)


def numpy_wenlan(image, text, image_m, text_m, ids, image_queue, text_queue, queue_ids, temp,
                 exclude_same_id=True):
  return (numpy_moco(image, text_m, ids, text_queue, queue_ids, temp, exclude_same_id)
          + numpy_moco(text, image_m, ids, image_queue, queue_ids, temp, exclude_same_id))


def _unit(rng, *shape):
  x = rng.normal(size=shape).astype(np.float32)
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _inputs(n=16, d=8, k=40, written=30, seed=0):
  rng = np.random.default_rng(seed)
  image, text, image_m, text_m = (_unit(rng, n, d) for _ in range(4))
  ids = rng.permutation(50).astype(np.int32)[:n]
  ids[n - 1] = ids[2]  # Two captions of one image in the batch.
  image_queue, text_queue = _unit(rng, k, d), _unit(rng, k, d)
  queue_ids = rng.integers(0, 50, size=k).astype(np.int32)
  queue_ids[:4] = ids[[0, 2, 2, n - 1]]  # Queued copies of batch images.
  queue_ids[written:] = queue_lib.EMPTY_ID
  image_queue[written:] = 5.0  # Garbage in empty slots, which must not count.
  text_queue[written:] = -3.0
  return image, text, image_m, text_m, ids, image_queue, text_queue, queue_ids


@pytest.mark.parametrize('exclude_same_id', [True, False])
def test_wenlan_matches_numpy(exclude_same_id):
  inputs = _inputs()
  loss, metrics = wenlan.wenlan_loss(*inputs, temperature=0.07, exclude_same_id=exclude_same_id)
  expected = numpy_wenlan(*inputs, 0.07, exclude_same_id)
  np.testing.assert_allclose(loss, expected, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(metrics['i2t_loss'] + metrics['t2i_loss'], loss, rtol=1e-6)
  np.testing.assert_allclose(metrics['queue_fill'], 30 / 40)


def test_empty_queue_gives_zero_loss():
  """Only the positive in the softmax: nothing to contrast yet (MoCo's first step)."""
  image, text, image_m, text_m, ids, image_queue, text_queue, queue_ids = _inputs()
  queue_ids = np.full_like(queue_ids, queue_lib.EMPTY_ID)
  loss, _ = wenlan.wenlan_loss(image, text, image_m, text_m, ids, image_queue, text_queue,
                             queue_ids, temperature=0.07)
  assert float(loss) == 0.0


def test_random_initial_keys_are_negatives_from_the_first_step():
  """A queue that starts with random unit keys (MoCo, BriVL): every slot is a
  negative for every query, none a positive, before anything is written."""
  image, text, image_m, text_m, ids, *_ = _inputs()
  queue = queue_lib.init(40, {'image': 8, 'text': 8}, rng=jax.random.PRNGKey(1))
  inputs = (image, text, image_m, text_m, ids, *jax.device_get(
      (queue['image'], queue['text'], queue['ids'])))
  loss, metrics = wenlan.wenlan_loss(*inputs, temperature=0.07)
  np.testing.assert_allclose(loss, numpy_wenlan(*inputs, 0.07), rtol=1e-5, atol=1e-5)
  assert float(loss) > 0.0
  assert float(metrics['queue_fill']) == 0.0  # No real image's key yet.
  grads = jax.grad(lambda x: wenlan.wenlan_loss(x, *inputs[1:], temperature=0.07)[0])(image)
  assert np.abs(np.asarray(grads)).max() > 0.0


def test_keys_get_no_gradient_and_queries_match_finite_differences():
  image, text, image_m, text_m, ids, image_queue, text_queue, queue_ids = _inputs(n=4, d=3, k=6,
                                                                                  written=5)
  args = [np.float64(a) if a.dtype == np.float32 else a
          for a in (image, text, image_m, text_m, ids, image_queue, text_queue, queue_ids)]
  with jax.enable_x64(True):
    grads = jax.grad(lambda *x: wenlan.wenlan_loss(*x, *args[4:], temperature=0.1)[0],
                     argnums=(0, 1, 2, 3))(*args[:4])
    assert not np.asarray(grads[2]).any() and not np.asarray(grads[3]).any()
    eps = 1e-6
    for argnum in (0, 1):
      numeric = np.zeros_like(args[argnum])
      for index in np.ndindex(*numeric.shape):
        plus, minus = list(args), list(args)
        plus[argnum], minus[argnum] = args[argnum].copy(), args[argnum].copy()
        plus[argnum][index] += eps
        minus[argnum][index] -= eps
        numeric[index] = (numpy_wenlan(*plus, 0.1) - numpy_wenlan(*minus, 0.1)) / (2 * eps)
      np.testing.assert_allclose(grads[argnum], numeric, rtol=1e-5, atol=1e-6)


def test_sharded_equals_single_device_with_gradients():
  inputs = _inputs(n=32, k=64, written=48)
  mesh = mesh_lib.make_mesh()

  def loss_fn(axis_name=None, **arguments):
    return wenlan.wenlan_loss(**arguments, temperature=0.07, axis_name=axis_name)

  sharded = shard.over_batch(loss_fn, mesh, replicated=('image_queue', 'text_queue', 'queue_ids'))
  names = ('image_emb', 'text_emb', 'image_emb_m', 'text_emb_m', 'image_ids', 'image_queue',
           'text_queue', 'queue_ids')

  def loss_of(fn):
    return jax.jit(jax.value_and_grad(
        lambda x, y: fn(**dict(zip(names, (x, y, *inputs[2:]))))[0], argnums=(0, 1)))

  single = loss_of(loss_fn)(inputs[0], inputs[1])
  multi = loss_of(sharded)(inputs[0], inputs[1])
  for a, b in zip(jax.tree.leaves(single), jax.tree.leaves(multi)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(single[0], numpy_wenlan(*inputs, 0.07), rtol=1e-5)
  assert jnp.isfinite(single[0])

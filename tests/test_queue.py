"""Key queues and momentum state: the ring buffer's semantics, and, through the
real training step on 8 devices, that after k steps the queue holds exactly
the last k global batches of momentum keys, in order, identical on every
device, while the momentum parameters follow the EMA."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxret import errors
from jaxret.data import pipeline
from jaxret.data import sources
from jaxret.data import tokenizer as tokenizer_lib
from jaxret.losses import queue as queue_lib
from jaxret.objectives import momentum as momentum_lib
from jaxret.parallel import host
from jaxret.parallel import mesh as mesh_lib
from jaxret.train import setup
from jaxret.train import step as step_lib
from method_configs import tiny_config

BATCH = 16
QUEUE = 32  # Two global batches: the third step wraps around.


def test_enqueue_writes_at_the_pointer_and_wraps():
  queue = queue_lib.init(6, {'image': 2})
  assert not np.asarray(queue_lib.valid(queue)).any()
  batches = [(np.array([i, i + 10], np.int32), np.full((2, 2), float(i), np.float32))
             for i in range(4)]
  for ids, keys in batches:
    queue = queue_lib.enqueue(queue, ids, image=keys)
  assert int(queue['ptr']) == (4 * 2) % 6
  # Slots 0-1 were overwritten by the fourth batch; 2-5 hold the second and third.
  np.testing.assert_array_equal(queue['ids'], [3, 13, 1, 11, 2, 12])
  ordered = queue_lib.oldest_first(queue)
  np.testing.assert_array_equal(ordered['ids'], [1, 11, 2, 12, 3, 13])
  np.testing.assert_array_equal(ordered['image'][:, 0], [1, 1, 2, 2, 3, 3])
  assert np.asarray(queue_lib.valid(queue)).all()


def test_random_initial_keys_are_unit_negatives_that_match_no_image():
  queue = queue_lib.init(8, {'image': 4, 'text': 3}, rng=jax.random.PRNGKey(0))
  np.testing.assert_array_equal(queue['ids'], np.full(8, queue_lib.RANDOM_ID))
  assert queue_lib.RANDOM_ID < 0 and queue_lib.RANDOM_ID != queue_lib.EMPTY_ID
  assert np.asarray(queue_lib.valid(queue)).all()  # They count in the softmax ...
  assert float(queue_lib.fill(queue['ids'])) == 0.0  # ... but hold no real image's key.
  for name in ('image', 'text'):
    np.testing.assert_allclose(np.linalg.norm(queue[name], axis=1), 1.0, rtol=1e-6)
  assert not np.allclose(queue['image'][0], queue['image'][1])
  queue = queue_lib.enqueue(queue, jnp.arange(4), image=jnp.ones((4, 4)), text=jnp.ones((4, 3)))
  assert float(queue_lib.fill(queue['ids'])) == 0.5


def test_enqueue_stops_gradients():
  def fn(keys):
    queue = queue_lib.enqueue(queue_lib.init(4, {'text': 3}), jnp.arange(2), text=keys)
    return jnp.sum(queue['text'] ** 2)
  assert not np.asarray(jax.grad(fn)(jnp.ones((2, 3)))).any()


def test_queue_that_the_batch_does_not_tile_is_refused():
  with pytest.raises(errors.UserError, match=r'loss.queue_size=100 is not a multiple of the '
                                             r'global batch size 32; use e.g. '):
    queue_lib.check_size(100, 32)
  with pytest.raises(errors.UserError, match='not a multiple'):
    queue_lib.enqueue(queue_lib.init(5, {'image': 2}), jnp.arange(2), image=jnp.ones((2, 2)))


def test_ema_and_ramp():
  slow = {'w': jnp.array([1.0, 2.0])}
  fast = {'w': jnp.array([3.0, 6.0])}
  np.testing.assert_allclose(momentum_lib.ema(slow, fast, 0.75)['w'], [1.5, 3.0])
  np.testing.assert_allclose([momentum_lib.ramp(s, 10, 0.4) for s in (0, 5, 10, 20)],
                             [0.0, 0.2, 0.4, 0.4], rtol=1e-6)
  np.testing.assert_allclose(momentum_lib.ramp(0, 0, 0.4), 0.4)


def _config(loss_name):
  config = tiny_config(loss_name)
  config.batch_size = BATCH
  config.loss.queue_size = QUEUE
  if loss_name == 'albef':  # The queue's wiring does not involve the fusion encoder.
    config.loss.itm_weight = 0.0
    config.loss.mlm_weight = 0.0
  return config


@functools.lru_cache(maxsize=None)
def _trained(loss_name, steps=3):
  """Steps of the compiled train step on 8 devices; per step, the momentum keys
  computed independently (on the host, from the momentum parameters before the
  step) and the state after it."""
  config = _config(loss_name)
  mesh = mesh_lib.make_mesh()
  records = sources.load_split(config.data, 'train')
  tokenizer = tokenizer_lib.build_word_level(
      (t for caps in records.captions for t in caps), config.data.text_len)
  dataset = pipeline.train_dataset(records, tokenizer, config.data, seed=config.seed,
                                   global_batch=config.batch_size)
  trainable = setup.Trainable(config, tokenizer, mesh)
  model = trainable.model
  embed = jax.jit(lambda params, b: (
      model.apply({'params': params}, b['image'], method=model.encode_image)[0],
      model.apply({'params': params}, b['text'], b['text_mask'], method=model.encode_text)[0]))
  step_fn = trainable.compiled_step()
  state = trainable.init_state()
  initial = jax.device_get(state.extra['queue'])
  history = []
  for s in range(steps):
    batch = dataset[s]
    momentum = jax.device_get(state.extra['momentum'])
    params = jax.device_get(state.params)
    keys = jax.device_get(embed(momentum, batch))
    state, _ = step_fn(state, host.to_global(batch, mesh))
    queue = state.extra['queue']  # Read now: the next step donates the state.
    history.append({'ids': batch['image_id'], 'image': keys[0], 'text': keys[1],
                    'momentum_before': momentum, 'params_before': params,
                    'queue': jax.device_get(queue),
                    'queue_shards': jax.tree.map(
                        lambda x: [np.asarray(s.data) for s in x.addressable_shards], queue)})
  return config, initial, history


@pytest.mark.parametrize('loss_name', ['wenlan', 'albef'])
def test_queue_holds_the_last_global_batches_of_momentum_keys_in_order(loss_name):
  _, initial, history = _trained(loss_name)
  # WenLan's queues start with random unit keys (MoCo, BriVL); ALBEF's start empty.
  initial_id = queue_lib.RANDOM_ID if loss_name == 'wenlan' else queue_lib.EMPTY_ID
  np.testing.assert_array_equal(initial['ids'], np.full(QUEUE, initial_id))
  for k, record in enumerate(history, start=1):
    queue = record['queue']
    assert int(queue['ptr']) == (k * BATCH) % QUEUE
    held = min(k, QUEUE // BATCH)
    ordered = jax.device_get(queue_lib.oldest_first(queue))
    recent = history[k - held:k]
    expected_ids = np.concatenate([r['ids'] for r in recent])
    np.testing.assert_array_equal(ordered['ids'][QUEUE - held * BATCH:], expected_ids)
    # Slots not written yet still hold their initial ids and keys.
    unwritten = jax.device_get(queue_lib.oldest_first({**initial, 'ptr': queue['ptr']}))
    for name in ('ids', 'image', 'text'):
      np.testing.assert_array_equal(ordered[name][:QUEUE - held * BATCH],
                                    unwritten[name][:QUEUE - held * BATCH])
    for name in ('image', 'text'):
      expected = np.concatenate([r[name] for r in recent])
      np.testing.assert_allclose(ordered[name][QUEUE - held * BATCH:], expected, atol=1e-5)


@pytest.mark.parametrize('loss_name', ['wenlan', 'albef'])
def test_queue_is_identical_on_every_device(loss_name):
  _, _, history = _trained(loss_name)
  for record in history:
    shards_by_leaf = jax.tree.leaves(record['queue_shards'], is_leaf=lambda x: isinstance(x, list))
    for leaf, shards in zip(jax.tree.leaves(record['queue']), shards_by_leaf):
      assert len(shards) == 8
      for data in shards:  # Every device holds the whole queue, the same one.
        np.testing.assert_array_equal(data, leaf)


@pytest.mark.parametrize('loss_name', ['wenlan', 'albef'])
def test_momentum_parameters_follow_the_ema(loss_name):
  config, _, history = _trained(loss_name)
  m = config.loss.momentum
  for before, after in zip(history, history[1:]):
    # Momentum after step s = m · momentum before + (1 − m) · params after step s.
    expected = jax.tree.map(lambda slow, fast: m * slow + (1 - m) * fast,
                            before['momentum_before'], after['params_before'])
    for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(after['momentum_before'])):
      np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  first = history[0]
  for a, b in zip(jax.tree.leaves(first['momentum_before']),
                  jax.tree.leaves(first['params_before'])):
    np.testing.assert_array_equal(a, b)  # A copy at initialisation.


@pytest.mark.parametrize('queue_init', ['random', 'empty'])
def test_wenlan_first_step_has_negatives_with_random_initial_keys(queue_init):
  """With random initial keys (the default) the first step has a loss and a
  gradient; with empty queues its softmax holds only the positive: loss 0."""
  config = _config('wenlan')
  config.loss.queue_init = queue_init
  records = sources.load_split(config.data, 'train')
  tokenizer = tokenizer_lib.build_word_level(
      (t for caps in records.captions for t in caps), config.data.text_len)
  batch = pipeline.train_dataset(records, tokenizer, config.data, seed=config.seed,
                                 global_batch=config.batch_size)[0]
  trainable = setup.Trainable(config, tokenizer, mesh_lib.make_mesh(devices=jax.devices()[:1]))
  state = trainable.init_state()
  loss, metrics, _, grads = jax.jit(
      lambda s, b: step_lib.compute_gradients(s, b, trainable.objective))(state, batch)
  gradient_norm = float(optax.tree.norm(grads))
  if queue_init == 'random':
    assert float(loss) > 0.0 and gradient_norm > 0.0
    assert float(metrics['queue_fill']) == 0.0  # No real image's key yet.
  else:
    assert float(loss) == 0.0 and gradient_norm == 0.0

"""IRT's loss, KoLeo and cross-batch memory against NumPy, on one device and on 8."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxret import errors
from jaxret.data import pipeline
from jaxret.data import sources
from jaxret.data import tokenizer as tokenizer_lib
from jaxret.losses import irt
from jaxret.objectives import cross_batch_memory
from jaxret.parallel import host
from jaxret.parallel import mesh as mesh_lib
from jaxret.parallel import shard
from jaxret.train import setup
from method_configs import tiny_config

MARGIN = 0.5


# ---------------------------------------------------------------- NumPy reference

def numpy_contrastive_sum(anchors, anchor_labels, references, reference_labels, margin,
                          excluded=()):
  """Pair by pair: (1 − s) for same labels, s for other labels when s > margin;
  references labelled −1 and (anchor, reference) pairs in `excluded` skipped."""
  total = 0.0
  for i, (a, la) in enumerate(zip(np.float64(anchors), anchor_labels)):
    for j, (r, lr) in enumerate(zip(np.float64(references), reference_labels)):
      if lr < 0 or (i, j) in excluded:
        continue
      s = a @ r
      if la == lr:
        total += 1 - s
      elif s > margin:
        total += s
  return total


def numpy_koleo(emb, identity, eps=1e-8):
  """−mean over rows with a neighbour of log(‖x_i − x_nn(i)‖ + ε), nn among other identities."""
  emb = np.float64(emb)
  terms = []
  for i, x in enumerate(emb):
    candidates = [j for j in range(len(emb)) if identity[j] != identity[i]]
    if not candidates:
      continue
    nearest = max(candidates, key=lambda j: x @ emb[j])
    terms.append(-np.log(np.linalg.norm(x - emb[nearest]) + eps))
  return np.mean(terms) if terms else 0.0


def numpy_image_loss(emb, labels, identity, slots, memory_emb, memory_labels, margin, weight):
  n = len(emb)
  batch = numpy_contrastive_sum(emb, labels, emb, labels, margin,
                                excluded={(i, i) for i in range(n)})
  memory = numpy_contrastive_sum(emb, labels, memory_emb, memory_labels, margin,
                                 excluded={(i, s) for i, s in enumerate(slots) if s >= 0})
  return (batch + memory) / n + weight * numpy_koleo(emb, identity)


def numpy_cross_modal_loss(image, text, ids, memory_image, memory_text, memory_labels, margin,
                           weight):
  n = len(ids)
  total = (numpy_contrastive_sum(image, ids, text, ids, margin)
           + numpy_contrastive_sum(image, ids, memory_text, memory_labels, margin)
           + numpy_contrastive_sum(text, ids, image, ids, margin)
           + numpy_contrastive_sum(text, ids, memory_image, memory_labels, margin))
  return total / (2 * n) + weight * 0.5 * (numpy_koleo(image, ids) + numpy_koleo(text, ids))


def _unit(x):
  return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _clustered(rng, n, d, labels, spread=0.6):
  """Unit vectors near one centre per label, so that many pairs cross the margin."""
  centres = rng.normal(size=(labels.max() + 1, d))
  return _unit(centres[labels] + spread * rng.normal(size=(n, d)))


def _image_inputs(n=16, d=8, memory=24, seed=0):
  """Labels with repeats, two copies of one image, a memory with empty slots,
  and this batch written at slots 5.. (wrapping), as after an enqueue."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 5, size=n).astype(np.int32)
  identity = np.arange(100, 100 + n, dtype=np.int32)
  emb = _clustered(rng, n, d, labels)
  emb[n - 1], labels[n - 1], identity[n - 1] = emb[2], labels[2], identity[2]  # An image twice.
  memory_labels = np.concatenate([rng.integers(0, 5, size=memory - n), np.full(n, -1)])
  memory_labels = memory_labels.astype(np.int32)
  memory_emb = _clustered(rng, memory, d, np.maximum(memory_labels, 0))
  memory_emb[memory_labels < 0] = 0.0
  slots = (5 + np.arange(n)) % memory
  memory_emb[slots], memory_labels[slots] = emb, labels
  return emb, labels, identity, slots.astype(np.int32), memory_emb, memory_labels


def _cross_inputs(n=16, d=8, memory=24, seed=1):
  """Several captions of some images (copies of one image are one vector), texts
  near their image's centre, and a memory with empty slots."""
  rng = np.random.default_rng(seed)
  ids = rng.integers(0, 10, size=n).astype(np.int32)
  centres = rng.normal(size=(10, d))
  image = _unit(centres + 0.6 * rng.normal(size=(10, d)))[ids]
  text = _unit(centres[ids] + 0.6 * rng.normal(size=(n, d)))
  memory_labels = np.concatenate([rng.integers(0, 10, size=memory - 6),
                                  np.full(6, -1)]).astype(np.int32)
  memory_image = _unit(centres[memory_labels] + 0.6 * rng.normal(size=(memory, d)))
  memory_text = _unit(centres[memory_labels] + 0.6 * rng.normal(size=(memory, d)))
  memory_image[memory_labels < 0] = memory_text[memory_labels < 0] = 0.0
  return image, text, ids, memory_image, memory_text, memory_labels


# ---------------------------------------------------------------- the loss pieces

def test_margin_contrastive_sum_matches_numpy_with_empty_slots_and_exclusions():
  emb, labels, _, slots, memory_emb, memory_labels = _image_inputs()
  total, positives, negatives = irt.margin_contrastive_sum(
      emb, labels, memory_emb, memory_labels, MARGIN, excluded_column=slots)
  expected = numpy_contrastive_sum(emb, labels, memory_emb, memory_labels, MARGIN,
                                   excluded={(i, s) for i, s in enumerate(slots)})
  np.testing.assert_allclose(total, expected, rtol=1e-5, atol=1e-5)
  assert 0 < negatives and 0 < positives
  # Empty slots count nowhere, even for an anchor with the empty label.
  total_empty, pos_empty, neg_empty = irt.margin_contrastive_sum(
      emb, np.full(len(emb), -1, np.int32), np.zeros_like(memory_emb),
      np.full(len(memory_emb), -1, np.int32), MARGIN)
  assert (total_empty, pos_empty, neg_empty) == (0, 0, 0)


def test_negatives_count_only_above_the_margin():
  anchor = _unit(np.array([[1.0, 0.0]]))
  references = _unit(np.array([[1.0, 0.9], [1.0, 1.1], [0.0, 1.0], [1.0, 0.2]]))
  total, positives, negatives = irt.margin_contrastive_sum(
      anchor, np.array([0]), references, np.array([1, 1, 1, 0]), 0.7)
  s = references @ anchor[0]  # 0.743, 0.673, 0, 0.981
  np.testing.assert_allclose(total, s[0] + (1 - s[3]), rtol=1e-6)
  assert (int(positives), int(negatives)) == (1, 1)


def test_koleo_matches_numpy_and_skips_copies_of_the_same_image():
  emb, _, identity, *_ = _image_inputs()
  np.testing.assert_allclose(irt.koleo(emb, identity), numpy_koleo(emb, identity), rtol=1e-5)
  # Rows 2 and 15 are one image: neither is the other's neighbour (else log(0 + ε)).
  assert float(irt.koleo(emb, identity)) < 5
  # A batch of one image has no neighbours: the regulariser is 0, not NaN.
  same = np.zeros(4, np.int32)
  assert float(irt.koleo(emb[:4], same)) == 0.0


def test_koleo_gradient_is_finite_for_exact_duplicates_of_different_ids():
  emb = _unit(np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]))
  grad = jax.grad(lambda x: irt.koleo(x, np.arange(3)))(emb)
  assert np.all(np.isfinite(grad))


def test_image_loss_matches_numpy():
  emb, labels, identity, slots, memory_emb, memory_labels = _image_inputs()
  loss, metrics = irt.irt_image_loss(emb, labels, identity, slots, memory_emb, memory_labels,
                                     koleo_weight=0.7)
  expected = numpy_image_loss(emb, labels, identity, slots, memory_emb, memory_labels,
                              MARGIN, 0.7)
  np.testing.assert_allclose(loss, expected, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(metrics['koleo'], numpy_koleo(emb, identity), rtol=1e-5)


def test_image_loss_excludes_only_the_anchors_own_slot():
  """The anchor's own memory slot holds the same vector: excluding it removes a
  (1 − 1) = 0 positive. Excluding a different slot of the same label changes the sum."""
  emb, labels, identity, slots, memory_emb, memory_labels = _image_inputs()
  args = (emb, labels, identity)
  base = irt.irt_image_loss(*args, slots, memory_emb, memory_labels)[0]
  not_written = irt.irt_image_loss(*args, np.full_like(slots, -1), memory_emb,
                                   memory_labels)[0]
  np.testing.assert_allclose(base, not_written, atol=1e-5)  # Self-pairs add 1 − 1 = 0 ...
  moved = irt.irt_image_loss(*args, np.roll(slots, 1), memory_emb, memory_labels)[0]
  assert abs(float(moved) - float(base)) > 1e-3  # ... another excluded pair does not.


def test_cross_modal_loss_matches_numpy():
  inputs = _cross_inputs()
  loss, metrics = irt.irt_cross_modal_loss(*inputs, koleo_weight=0.7)
  np.testing.assert_allclose(loss, numpy_cross_modal_loss(*inputs, MARGIN, 0.7),
                             rtol=1e-5, atol=1e-5)
  assert metrics['positive_pairs'] > 2 * len(inputs[2])  # Duplicated ids: extra positives.


def _finite_difference(fn, x, eps=1e-6):
  numeric = np.zeros_like(x)
  for index in np.ndindex(*x.shape):
    plus, minus = x.copy(), x.copy()
    plus[index] += eps
    minus[index] -= eps
    numeric[index] = (fn(plus) - fn(minus)) / (2 * eps)
  return numeric


def test_gradients_match_finite_differences():
  """Both losses are smooth away from s = β and nearest-neighbour ties. Exact
  copies of one vector tie as other rows' nearest neighbour, so the copies are
  nudged apart here (their ids and labels stay equal)."""
  emb, labels, identity, slots, memory_emb, memory_labels = _image_inputs(n=6, d=4, memory=10)
  image, text, ids, memory_image, memory_text, memory_ids = _cross_inputs(n=6, d=4, memory=10)
  rng = np.random.default_rng(5)
  emb = _unit(emb + 1e-2 * rng.normal(size=emb.shape))
  image = _unit(image + 1e-2 * rng.normal(size=image.shape))
  with jax.enable_x64(True):
    emb, image = np.float64(emb), np.float64(image)
    grad = jax.grad(lambda x: irt.irt_image_loss(
        x, labels, identity, slots, memory_emb, memory_labels, koleo_weight=0.7)[0])(emb)
    numeric = _finite_difference(lambda x: numpy_image_loss(
        x, labels, identity, slots, memory_emb, memory_labels, MARGIN, 0.7), emb)
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-6)
    grad = jax.grad(lambda x: irt.irt_cross_modal_loss(
        x, text, ids, memory_image, memory_text, memory_ids, koleo_weight=0.7)[0])(image)
    numeric = _finite_difference(lambda x: numpy_cross_modal_loss(
        x, text, ids, memory_image, memory_text, memory_ids, MARGIN, 0.7), image)
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-6)


def _assert_same_values_and_gradients(single, multi, args, argnums):
  def value_and_grads(fn):
    return jax.jit(jax.value_and_grad(lambda *a: fn(*a)[0], argnums=argnums))

  for a, b in zip(jax.tree.leaves(value_and_grads(single)(*args)),
                  jax.tree.leaves(value_and_grads(multi)(*args))):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_sharded_image_loss_equals_single_device_with_gradients():
  args = _image_inputs(n=32, memory=48)
  mesh = mesh_lib.make_mesh()
  fn = functools.partial(irt.irt_image_loss, koleo_weight=0.7)
  sharded = shard.over_batch(fn, mesh, replicated=('memory_emb', 'memory_labels'))
  names = ('emb', 'labels', 'identity', 'memory_slots', 'memory_emb', 'memory_labels')
  multi = lambda *a: sharded(**dict(zip(names, a)))
  _assert_same_values_and_gradients(fn, multi, args, argnums=(0,))


def test_sharded_cross_modal_loss_equals_single_device_with_gradients():
  args = _cross_inputs(n=32, memory=48)
  mesh = mesh_lib.make_mesh()
  fn = functools.partial(irt.irt_cross_modal_loss, koleo_weight=0.7)
  sharded = shard.over_batch(fn, mesh,
                             replicated=('memory_image', 'memory_text', 'memory_labels'))
  names = ('image_emb', 'text_emb', 'image_ids', 'memory_image', 'memory_text', 'memory_labels')
  multi = lambda *a: sharded(**dict(zip(names, a)))
  _assert_same_values_and_gradients(fn, multi, args, argnums=(0, 1))


# ---------------------------------------------------------------- the memory

def _batch(step, n=4, d=3):
  return {'embedding': (step + np.arange(n)[:, None] / 10 + np.zeros((n, d))).astype(np.float32),
          'label': (10 * step + np.arange(n)).astype(np.int32)}


@pytest.mark.parametrize('steps', [1, 2, 3, 5])
def test_enqueue_keeps_the_last_batches_in_order(steps):
  memory = cross_batch_memory.init(12, {'embedding': 3})  # Room for 3 batches of 4.
  for step in range(steps):
    memory, slots = cross_batch_memory.enqueue(memory, _batch(step), jnp.bool_(True))
    np.testing.assert_array_equal(slots, (4 * step + np.arange(4)) % 12)
  kept = list(range(max(0, steps - 3), steps))
  ordered = cross_batch_memory.in_order(memory)
  filled = ordered['label'] >= 0
  np.testing.assert_array_equal(ordered['label'][filled],
                                np.concatenate([_batch(s)['label'] for s in kept]))
  np.testing.assert_array_equal(ordered['embedding'][filled],
                                np.concatenate([_batch(s)['embedding'] for s in kept]))
  assert filled.sum() == 4 * len(kept)


def test_enqueue_does_nothing_when_disabled():
  memory = cross_batch_memory.init(8, {'embedding': 3})
  new, slots = cross_batch_memory.enqueue(memory, _batch(0), jnp.bool_(False))
  for a, b in zip(jax.tree.leaves(memory), jax.tree.leaves(new)):
    np.testing.assert_array_equal(a, b)
  assert np.all(slots == -1)


def test_memory_smaller_than_the_batch_is_refused():
  with pytest.raises(errors.UserError, match='at least the global batch'):
    cross_batch_memory.enqueue(cross_batch_memory.init(3, {'embedding': 3}), _batch(0),
                               jnp.bool_(True))


@pytest.mark.parametrize('loss_name, fields', [('irt', ('image', 'text')),
                                                ('irt_image', ('embedding',))])
def test_memory_after_training_steps_holds_the_last_global_batches(loss_name, fields):
  """8 devices, real train steps: after each step the memory holds exactly the
  embeddings (computed with that step's parameters) of the last global batches
  since `memory_start`, oldest first, identical on every device."""
  config = tiny_config(loss_name)
  config.batch_size = 16
  config.loss.memory_size = 48  # Three global batches.
  config.loss.memory_start = 1
  records = sources.load_split(config.data, 'train')
  tokenizer = tokenizer_lib.build_word_level(
      (t for caps in records.captions for t in caps), config.data.text_len)
  dataset = pipeline.train_dataset(records, tokenizer, config.data, seed=0, global_batch=16)
  mesh = mesh_lib.make_mesh()
  trainable = setup.Trainable(config, tokenizer, mesh)
  step_fn = trainable.compiled_step()
  state = trainable.init_state()
  embed = jax.jit(trainable.model.apply)
  written = []
  for step in range(5):
    batch = dataset[step]
    if step >= 1:
      outputs, _ = embed({'params': jax.device_get(state.params)}, batch['image'],
                         batch['text'], batch['text_mask'])
      entry = ({'embedding': outputs['image_emb']} if fields == ('embedding',) else
               {'image': outputs['image_emb'], 'text': outputs['text_emb']})
      label = (np.asarray(trainable.objective.train_labels())[batch['image_id']]
               if loss_name == 'irt_image' else batch['image_id'])
      written.append({**entry, 'label': label})
    state, _ = step_fn(state, host.to_global(batch, mesh))
    memory = state.extra['memory']
    for leaf in jax.tree.leaves(memory):  # Every device holds the same whole memory.
      shards = [np.asarray(s.data) for s in leaf.addressable_shards]
      assert all(s.shape == leaf.shape for s in shards)
      for s in shards[1:]:
        np.testing.assert_array_equal(s, shards[0])
    ordered = jax.device_get(cross_batch_memory.in_order(memory))
    filled = ordered['label'] >= 0
    kept = written[-3:]
    assert filled.sum() == 16 * len(kept)
    if kept:
      np.testing.assert_array_equal(ordered['label'][filled],
                                    np.concatenate([k['label'] for k in kept]))
      for name in fields:
        np.testing.assert_allclose(ordered[name][filled],
                                   np.concatenate([k[name] for k in kept]), atol=2e-5)

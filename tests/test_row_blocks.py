"""Losses and draws taken a block of rows at a time (`losses/row_blocks.py`) equal the
one-block ones: MoCo/WenLan, ALBEF's ITC, IRT and FILIP against their NumPy formulas, with
gradients; ITM's hard negatives the same on 1 and 8 devices and in any blocking."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxret.losses import albef
from jaxret.losses import filip
from jaxret.losses import irt
from jaxret.losses import itm
from jaxret.losses import row_blocks
from jaxret.losses import wenlan
from jaxret.parallel import mesh as mesh_lib
from jaxret.parallel import shard
from test_loss_albef import _itc_inputs
from test_loss_filip import _inputs as _filip_inputs
from test_loss_filip import numpy_filip_loss
from test_loss_irt import MARGIN
from test_loss_irt import _cross_inputs
from test_loss_irt import _image_inputs
from test_loss_irt import numpy_cross_modal_loss
from test_loss_irt import numpy_image_loss
from test_loss_albef import numpy_itc
from test_loss_wenlan import _inputs as _wenlan_inputs
from test_loss_wenlan import numpy_wenlan


@pytest.mark.parametrize('rows, most, size', [(32, 256, 32), (2048, 256, 256), (300, 256, 150),
                                               (7, 4, 1), (12, 5, 4)])
def test_block_size_is_the_largest_divisor_not_above_the_limit(rows, most, size):
  assert row_blocks.block_size(rows, most) == size


def _value_and_grads(loss, inputs, blocks, monkeypatch):
  monkeypatch.setattr(row_blocks, 'ROWS', blocks)
  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(inputs[0], inputs[1])


def _assert_trees_close(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def test_moco_in_blocks_of_rows_equals_one_block_and_numpy(monkeypatch):
  inputs = _wenlan_inputs(n=32, k=64, written=48)
  loss = lambda x, y: wenlan.wenlan_loss(x, y, *inputs[2:], temperature=0.07)[0]
  blocked = _value_and_grads(loss, inputs, 4, monkeypatch)  # 8 blocks of 4 rows.
  whole = _value_and_grads(loss, inputs, 256, monkeypatch)
  _assert_trees_close(blocked, whole)
  np.testing.assert_allclose(blocked[0], numpy_wenlan(*inputs, 0.07), rtol=1e-5)
  # On 8 devices, 2 blocks of 2 rows each (the sums vary over the devices).
  names = ('image_emb', 'text_emb', 'image_emb_m', 'text_emb_m', 'image_ids', 'image_queue',
           'text_queue', 'queue_ids')
  sharded = shard.over_batch(
      lambda axis_name=None, **a: wenlan.wenlan_loss(**a, temperature=0.07, axis_name=axis_name),
      mesh_lib.make_mesh(), replicated=('image_queue', 'text_queue', 'queue_ids'))
  sharded_loss = lambda x, y: sharded(**dict(zip(names, (x, y, *inputs[2:]))))[0]
  _assert_trees_close(_value_and_grads(sharded_loss, inputs, 2, monkeypatch), whole)


def test_itc_in_blocks_of_rows_equals_one_block_and_numpy(monkeypatch):
  inputs = _itc_inputs(n=32, k=64, written=40)
  loss = lambda x, y: albef.itc_loss(x, y, *inputs[2:], 0.07, 0.4)[0]
  blocked = _value_and_grads(loss, inputs, 4, monkeypatch)
  whole = _value_and_grads(loss, inputs, 256, monkeypatch)
  _assert_trees_close(blocked, whole)
  np.testing.assert_allclose(blocked[0], numpy_itc(*inputs, 0.07, 0.4), rtol=1e-5)
  # The temperature's gradient too (it is passed to every block).
  grad_t = lambda: jax.grad(lambda t: albef.itc_loss(*inputs, t, 0.4)[0])(0.07)
  monkeypatch.setattr(row_blocks, 'ROWS', 4)
  blocked_t = grad_t()
  monkeypatch.setattr(row_blocks, 'ROWS', 256)
  np.testing.assert_allclose(blocked_t, grad_t(), rtol=1e-5)


def test_hard_negatives_do_not_depend_on_devices_or_blocks(monkeypatch):
  rng = np.random.default_rng(3)
  n, d = 64, 8
  queries, keys = rng.normal(size=(2, n, d)).astype(np.float32)
  ids = (np.arange(n) // 2).astype(np.int32)  # Two captions per image.
  key = jax.random.key(5)

  def draw(mesh):
    fn = shard.over_batch(itm.hard_negatives, mesh, replicated=('rng', 'temperature'),
                          out_specs=shard.batch_spec(mesh))
    return jax.jit(fn)(rng=key, queries=queries, keys=keys, row_ids=ids,
                       temperature=jnp.float32(0.5))

  one = draw(mesh_lib.make_mesh(devices=jax.devices()[:1]))
  monkeypatch.setattr(row_blocks, 'ROWS', 4)  # 2 blocks a device on 8, 16 on one.
  eight = draw(mesh_lib.make_mesh())
  blocked_one = draw(mesh_lib.make_mesh(devices=jax.devices()[:1]))
  for a, b, c in zip(one, eight, blocked_one):
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)
  indices, has_negative = map(np.asarray, one)
  assert has_negative.all() and (ids[indices] != ids).all()
  # Row i's draw is `sample_hard_negatives` of its own row with key fold_in(key, i).
  sims = queries @ keys.T / 0.5
  for row in (0, 17, 63):
    expected, _ = itm.sample_hard_negatives(jax.random.fold_in(key, row), sims[row][None],
                                            ids[row][None], ids)
    assert int(expected[0]) == indices[row]
  # Different rows draw differently: not one column for all.
  assert len(set(indices.tolist())) > n // 4


def test_irt_in_blocks_of_rows_equals_one_block_and_numpy(monkeypatch):
  """Both IRT forms (their margin sums and KoLeo's neighbours), with gradients."""
  emb, labels, identity, slots, memory_emb, memory_labels = _image_inputs()
  image_loss = lambda x, _: irt.irt_image_loss(x, labels, identity, slots, memory_emb,
                                               memory_labels, koleo_weight=0.7)[0]
  cross = _cross_inputs()
  cross_loss = lambda x, y: irt.irt_cross_modal_loss(x, y, *cross[2:], koleo_weight=0.7)[0]
  for loss, inputs in ((image_loss, (emb, emb)), (cross_loss, cross)):
    blocked = _value_and_grads(loss, inputs, 4, monkeypatch)  # 4 blocks of 4 rows.
    whole = _value_and_grads(loss, inputs, 256, monkeypatch)
    _assert_trees_close(blocked, whole)
  np.testing.assert_allclose(
      image_loss(emb, None), numpy_image_loss(emb, labels, identity, slots, memory_emb,
                                              memory_labels, MARGIN, 0.7), rtol=1e-5)
  np.testing.assert_allclose(cross_loss(cross[0], cross[1]),
                             numpy_cross_modal_loss(*cross, MARGIN, 0.7), rtol=1e-5)


def test_filip_in_blocks_of_rows_equals_one_block_and_numpy(monkeypatch):
  """Token similarities a few rows at a time (2 rows: 8 × 6 × 7 = 336 elements a row)."""
  image_tokens, text_tokens, text_mask, ids = _filip_inputs(n=8)
  loss = lambda x, y: filip.filip_loss(x, y, text_mask, ids, jnp.float32(9.0))[0]
  inputs = (image_tokens, text_tokens)
  assert row_blocks.rows_within(8 * 6 * 7) > 8  # The default: one block here.
  monkeypatch.setattr(row_blocks, 'ELEMENTS', 2 * 8 * 6 * 7)
  blocked = _value_and_grads(loss, inputs, 256, monkeypatch)
  monkeypatch.setattr(row_blocks, 'ELEMENTS', 1 << 24)
  whole = _value_and_grads(loss, inputs, 256, monkeypatch)
  _assert_trees_close(blocked, whole)
  np.testing.assert_allclose(blocked[0], numpy_filip_loss(image_tokens, text_tokens, text_mask,
                                                         ids, 9.0), rtol=1e-5)

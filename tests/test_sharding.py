"""The same steps on 1 device and on 8 give the same losses, gradients and parameters
(within 1e-5 of each array's scale)."""

import functools

import jax
import numpy as np
import pytest

from jaxret import errors
from jaxret import objectives
from jaxret.data import pipeline
from jaxret.data import sources
from jaxret.data import tokenizer as tokenizer_lib
from jaxret.parallel import host
from jaxret.parallel import mesh as mesh_lib
from jaxret.train import setup
from jaxret.train import step as step_lib
from method_configs import tiny_config

STEPS = 3


def _run(config, mesh, tokenizer, batches):
  """Per step: (loss, gradients, parameters after the update), all on the host."""
  trainable = setup.Trainable(config, tokenizer, mesh)

  @jax.jit
  def step_with_gradients(state, batch):  # train_step, also returning the gradients.
    loss, _, extra, grads = step_lib.compute_gradients(state, batch, trainable.objective)
    state = step_lib.apply_gradients(state, grads, extra, trainable.objective,
                                     trainable.optimizer)
    return state, loss, grads

  state = trainable.init_state()
  history = []
  for local_batch in batches:
    state, loss, grads = step_with_gradients(state, host.to_global(local_batch, mesh))
    history.append(jax.device_get((loss, grads, state.params)))
  return history, state


def _setup(config):
  records = sources.load_split(config.data, 'train')
  tokenizer = tokenizer_lib.build_word_level(
      (t for caps in records.captions for t in caps), config.data.text_len)
  dataset = pipeline.train_dataset(records, tokenizer, config.data, seed=config.seed,
                                   global_batch=config.batch_size)
  return tokenizer, [dataset[s] for s in range(STEPS)]


def _assert_close(single, multi, what):
  """Equal within 1e-5 relative to each array's largest magnitude (at least 1): the
  tolerance of float32 sums taken in another order on another partitioning."""
  for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(single)[0],
                          jax.tree.leaves(multi)):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = max(1.0, float(np.max(np.abs(a))))
    error = float(np.max(np.abs(a - b)))
    assert error <= 1e-5 * scale, (
        f'{what} {jax.tree_util.keystr(path)}: max difference {error:.2e} > 1e-5 x {scale:.3g}')


def _assert_same(single, multi):
  for step, ((loss1, grads1, params1), (loss8, grads8, params8)) in enumerate(zip(single, multi)):
    _assert_close(loss1, loss8, f'step {step} loss')
    _assert_close(grads1, grads8, f'step {step} gradient of')
    _assert_close(params1, params8, f'step {step} parameter')


def _config(loss_name):
  config = tiny_config(loss_name)
  config.batch_size = 32
  return config


@functools.lru_cache(maxsize=None)
def _single_device(loss_name):
  """The reference: the loss's tiny config on one device (shared by several tests)."""
  tokenizer, batches = _setup(_config(loss_name))
  history, _ = _run(_config(loss_name), mesh_lib.make_mesh(devices=jax.devices()[:1]),
                    tokenizer, batches)
  return history


@pytest.mark.parametrize('loss_name', sorted(objectives.OBJECTIVES))
def test_one_and_eight_devices_agree(loss_name):
  config = _config(loss_name)
  tokenizer, batches = _setup(config)
  multi, _ = _run(config, mesh_lib.make_mesh(), tokenizer, batches)
  _assert_same(_single_device(loss_name), multi)


def test_fsdp_on_a_two_axis_mesh_shards_parameters_and_agrees():
  """Batch over data x fsdp (2 x 4), large parameters split over fsdp (ZeRO-3)."""
  config = _config('clip')
  config.sharding.rules = (('.*(kernel|embedding)$', ('fsdp',)),)
  tokenizer, batches = _setup(config)
  multi, state = _run(config, mesh_lib.make_mesh((('data', 2), ('fsdp', 4))), tokenizer, batches)
  _assert_same(_single_device('clip'), multi)
  kernel = state.params['image_encoder']['encoder']['block00']['mlp']['fc1']['kernel']
  assert kernel.sharding.spec[0] == 'fsdp'
  assert kernel.addressable_shards[0].data.shape[0] == kernel.shape[0] // 4
  # Optimizer moments follow the same rules.
  moments = [x for x in jax.tree.leaves(state.opt_state) if x.shape == kernel.shape]
  assert moments and all(m.sharding.spec[0] == 'fsdp' for m in moments)


@pytest.mark.parametrize('axes, fragment', [
    ((('data', 3),), 'has 3 devices but there are 8'),
    ((('data', 3), ('model', -1)), 'needs a multiple of 3 devices'),
    ((('data', -1), ('model', -1)), 'at most one -1'),
])
def test_mesh_that_does_not_match_the_devices_is_refused(axes, fragment):
  with pytest.raises(errors.UserError, match=fragment):
    mesh_lib.make_mesh(axes)


def test_indivisible_global_batch_is_refused():
  with pytest.raises(errors.UserError, match='batch_size=30 is not divisible by the 8 devices'):
    mesh_lib.check_global_batch(30, mesh_lib.make_mesh())
  mesh = mesh_lib.make_mesh((('data', 2), ('model', 4)))
  assert mesh_lib.check_global_batch(30, mesh) == 30  # Split over `data` only.

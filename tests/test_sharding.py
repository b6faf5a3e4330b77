"""The trainer's compiled step (`Trainable.compiled_step`: its shardings, its donation, its
skip of a non-finite update) on 1 device and on 8 gives the same losses, gradient norms and
parameters (within 1e-5 of each array's scale), and skips a batch with a NaN image on both."""

import functools

import jax
import jax.numpy as jnp
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
from method_configs import load_config
from method_configs import tiny_config

STEPS = 3  # Then one more batch, with a NaN image: the step skips its update.


def _run(config, mesh, tokenizer, batches):
  """The trainer's compiled step over `batches`. Per step, on the host: the step's metrics
  (`loss`, `grad_norm`, `finite`) and the parameters and extra state after it."""
  trainable = setup.Trainable(config, tokenizer, mesh)
  compiled_step = trainable.compiled_step()
  state = trainable.init_state()
  history = []
  for local_batch in batches:
    previous = state
    state, metrics = compiled_step(state, host.to_global(local_batch, mesh))
    kept = [jax.tree_util.keystr(path) for path, array in
            jax.tree_util.tree_flatten_with_path(previous)[0] if not array.is_deleted()]
    assert not kept, f'the step did not donate the state\'s {kept}'
    # Copies to the host: a NumPy view of the state's own buffers would keep the next step
    # from donating them.
    history.append(jax.device_get(jax.tree.map(jnp.copy, {
        'loss': metrics['loss'], 'grad_norm': metrics['grad_norm'],
        'finite': metrics['finite'], 'params': state.params, 'extra': state.extra})))
  for (path, array), sharding in zip(jax.tree_util.tree_flatten_with_path(state)[0],
                                     jax.tree.leaves(trainable.state_shardings)):
    assert array.sharding.is_equivalent_to(sharding, array.ndim), jax.tree_util.keystr(path)
  return history, state


def _setup(config):
  records = sources.load_split(config.data, 'train')
  tokenizer = tokenizer_lib.build_word_level(
      (t for caps in records.captions for t in caps), config.data.text_len)
  dataset = pipeline.train_dataset(records, tokenizer, config.data, seed=config.seed,
                                   global_batch=config.batch_size)
  poisoned = dict(dataset[STEPS])
  poisoned['image'] = np.array(poisoned['image'])
  poisoned['image'][0, 0, 0, 0] = np.nan
  return tokenizer, [dataset[s] for s in range(STEPS)] + [poisoned]


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
  assert len(single) == len(multi) == STEPS + 1
  for step, (one, eight) in enumerate(zip(single[:STEPS], multi[:STEPS])):
    assert one['finite'] and eight['finite'], f'step {step} is not finite'
    _assert_close(one['loss'], eight['loss'], f'step {step} loss')
    _assert_close(one['grad_norm'], eight['grad_norm'], f'step {step} gradient norm')
    _assert_close(one['params'], eight['params'], f'step {step} parameter')
  for history in (single, multi):  # The NaN image's step: reported, and nothing changes.
    before, skipped = history[STEPS - 1], history[STEPS]
    # Not finite: the loss, or a gradient (IRT's image loss stays finite, its gradients not).
    assert not skipped['finite']
    for what in ('params', 'extra'):
      for a, b in zip(jax.tree.leaves(before[what]), jax.tree.leaves(skipped[what])):
        np.testing.assert_array_equal(a, b, err_msg=f'{what} changed on a skipped step')


def _config(loss_name):
  config = tiny_config(loss_name)
  config.batch_size = 32
  config.on_nonfinite = 'skip'  # The same updates while finite; the last batch is not.
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


@pytest.mark.parametrize('method', ['clip'])
def test_video_one_and_eight_devices_agree(method):
  """configs/video.py: clips (B, T, H, W, 3) through the video tower (temporal transformer)."""
  def config():
    video = load_config('video', f'runlocal,method={method},frames=4')
    video.batch_size = 16  # Two clips per device.
    video.on_nonfinite = 'skip'
    return video
  tokenizer, batches = _setup(config())
  assert batches[0]['image'].shape == (16, 4, 64, 64, 3)
  single, _ = _run(config(), mesh_lib.make_mesh(devices=jax.devices()[:1]), tokenizer, batches)
  multi, _ = _run(config(), mesh_lib.make_mesh(), tokenizer, batches)
  _assert_same(single, multi)


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

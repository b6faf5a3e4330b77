"""`config.microbatches`: the compiled step with the batch in M chunks (gradient caching, or
accumulation of per-example losses) gives the losses, gradient norms and parameters of one
pass (M=1 on one device, `test_sharding`'s reference) within 1e-5, on 1 and 8 devices and
with FSDP, and still skips a batch with a NaN image; a bad M and an objective that cannot
chunk are refused with one line."""

import jax
import pytest

from jaxret import errors
from jaxret.data import tokenizer as tokenizer_lib
from jaxret.objectives import base
from jaxret.parallel import mesh as mesh_lib
from jaxret.train import microbatch
from jaxret.train import setup
from method_configs import load_config
from test_sharding import _assert_close
from test_sharding import _assert_same
from test_sharding import _config
from test_sharding import _run
from test_sharding import _setup
from test_sharding import _single_device

# On 8 devices: gradient caching with token embeddings (filip), a memory (irt),
# a second parameter read by the loss (siglip's bias), candidates drawn at random
# (distill), momentum keys and queues (wenlan), and those with hard negatives and
# masks drawn for the global batch and per-example terms added chunk by chunk
# (albef); accumulation (caption); clip on 1 device and with FSDP.
CHUNKED = ('albef', 'caption', 'distill', 'filip', 'irt', 'siglip', 'wenlan')


def _chunked_run(loss_name, microbatches, mesh, rules=()):
  config = _config(loss_name)
  config.microbatches = microbatches
  config.sharding.rules = rules
  tokenizer, batches = _setup(config)
  history, _ = _run(config, mesh, tokenizer, batches)
  return history


@pytest.mark.parametrize('loss_name', CHUNKED)
def test_two_chunks_on_eight_devices_equal_one_pass(loss_name):
  single = _single_device(loss_name)
  chunked = _chunked_run(loss_name, 2, mesh_lib.make_mesh())
  _assert_same(single, chunked)
  # Queues and memories: written once per step, with the same keys.
  for step, (one, two) in enumerate(zip(single, chunked)):
    _assert_close(one['extra'], two['extra'], f'step {step} extra state')


def test_four_chunks_on_one_device_equal_one_pass():
  mesh = mesh_lib.make_mesh(devices=jax.devices()[:1])
  _assert_same(_single_device('clip'), _chunked_run('clip', 4, mesh))


def test_chunks_with_fsdp_equal_one_pass():
  mesh = mesh_lib.make_mesh((('data', 2), ('fsdp', 4)))
  history = _chunked_run('clip', 2, mesh, rules=(('.*(kernel|embedding)$', ('fsdp',)),))
  _assert_same(_single_device('clip'), history)


def _trainable(loss_name, microbatches):
  config = _config(loss_name)
  config.microbatches = microbatches
  tokenizer, _ = _setup(config)
  return setup.Trainable(config, tokenizer, mesh_lib.make_mesh())


@pytest.mark.parametrize('microbatches, fragment', [
    (3, r'microbatches=3 does not divide the per-device batch of 4 \(batch_size=32 over 8 '
        r'devices\); nearest valid: 2 or 4'),
    (8, 'nearest valid: 4$'),
    (0, 'nearest valid: 1$'),
])
def test_microbatches_that_do_not_divide_the_per_device_batch_are_refused(microbatches, fragment):
  with pytest.raises(errors.UserError, match=fragment):
    _trainable('clip', microbatches)


class _WholeBatchObjective(base.Objective):
  """An objective that declares no chunking (as a new method might)."""

  def __call__(self, params, extra, batch, rng, step):
    raise NotImplementedError


def test_objectives_that_cannot_chunk_are_refused_by_name():
  mesh = mesh_lib.make_mesh()
  with pytest.raises(errors.UserError, match="loss 'whole' cannot be split into microbatches "
                                             r'\(its loss is not split into embeddings and a '
                                             r'loss on them\); use microbatches=1$'):
    microbatch.check(2, 32, mesh, _WholeBatchObjective, 'whole')
  microbatch.check(1, 32, mesh, _WholeBatchObjective, 'whole')  # One pass needs no chunking.


def test_config_arguments_give_a_giant_batch_and_refuse_an_m_that_does_not_divide_it():
  config = load_config('clip', 'runlocal,batch=16384,microbatches=300')
  assert (config.batch_size, config.microbatches) == (16384, 300)
  tokenizer = tokenizer_lib.build_word_level(['a', 'b'], config.data.text_len)
  with pytest.raises(errors.UserError, match=r'per-device batch of 16384 \(batch_size=16384 over '
                                             r'1 device\); nearest valid: 256 or 512$'):
    setup.Trainable(config, tokenizer, mesh_lib.make_mesh(devices=jax.devices()[:1]))

"""The training step's part of the objective protocol: after the optimizer update,
parameters are clamped into the objective's bounds, so a parameter that the
forward pass clamps (a logit scale, a temperature) never stays stuck past its
bound with a zero gradient."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxret.data import pipeline
from jaxret.data import sources
from jaxret.data import tokenizer as tokenizer_lib
from jaxret.objectives import base
from jaxret.parallel import mesh as mesh_lib
from jaxret.train import setup
from jaxret.train import step as step_lib
from method_configs import tiny_config

LOG_100 = float(np.log(100.0))


@functools.lru_cache(maxsize=None)
def _trainable(loss_name):
  """The loss's tiny config on one device, with a batch of 16 (and for ALBEF only
  the ITC, the loss that reads the temperature)."""
  config = tiny_config(loss_name)
  config.batch_size = 16
  if loss_name == 'albef':
    config.loss.queue_size = 32
    config.loss.itm_weight = 0.0
    config.loss.mlm_weight = 0.0
  records = sources.load_split(config.data, 'train')
  tokenizer = tokenizer_lib.build_word_level(
      (t for caps in records.captions for t in caps), config.data.text_len)
  dataset = pipeline.train_dataset(records, tokenizer, config.data, seed=config.seed,
                                   global_batch=config.batch_size)
  trainable = setup.Trainable(config, tokenizer, mesh_lib.make_mesh(devices=jax.devices()[:1]))

  @jax.jit
  def step_with_gradients(state, batch):  # train_step, also returning the gradients.
    _, _, extra, grads = step_lib.compute_gradients(state, batch, trainable.objective)
    state = step_lib.apply_gradients(state, grads, extra, trainable.objective,
                                     trainable.optimizer)
    return state, grads

  return trainable, step_with_gradients, [dataset[s] for s in range(3)]


@pytest.mark.parametrize('loss_name, name, start, bounds', [
    ('clip', 'logit_scale', LOG_100 + 1.0, (None, LOG_100)),  # Scale e·100 > 100.
    ('albef', 'temp', 0.7, (0.001, 0.5)),
    ('albef', 'temp', 0.0001, (0.001, 0.5)),
])
def test_parameter_past_its_bound_is_clamped_back_and_trains_again(loss_name, name, start,
                                                                   bounds):
  trainable, step, batches = _trainable(loss_name)
  assert trainable.objective.PARAM_BOUNDS == {name: bounds}
  state = trainable.init_state()
  state = state.replace(params={**state.params, name: jnp.full((), start, jnp.float32)})
  low, high = bounds
  bound = np.float32(high if start > high else low)
  values, gradients = [], []
  for batch in batches:
    state, grads = step(state, batch)
    values.append(float(state.params[name]))
    gradients.append(float(grads[name]))
  # Past the bound the forward clamp gives exactly zero gradient: only the
  # clamp after the update brings the parameter back, to the bound itself.
  assert gradients[0] == 0.0
  assert values[0] == bound
  # From there the gradient reaches it again, and it stays within its bounds.
  assert gradients[1] != 0.0 and gradients[2] != 0.0
  for value in values:
    assert (low is None or value >= np.float32(low)) and value <= np.float32(high)


def test_clamp_params_touches_only_the_bounded_parameters():
  class Bounded(base.Objective):
    PARAM_BOUNDS = {'scale': (None, 1.0), 'temp': (0.1, 0.5)}

    def __call__(self, params, extra, batch, rng, step):
      raise NotImplementedError

  objective = Bounded(None, None, {'name': 'bounded'}, None)
  params = {'scale': jnp.float32(3.0), 'temp': jnp.float32(0.01), 'w': jnp.full((2,), 9.0)}
  clamped = jax.device_get(objective.clamp_params(params))
  assert float(clamped['scale']) == 1.0 and float(clamped['temp']) == np.float32(0.1)
  np.testing.assert_array_equal(clamped['w'], params['w'])
  inside = {'scale': jnp.float32(-5.0), 'temp': jnp.float32(0.3), 'w': params['w']}
  for key, value in objective.clamp_params(inside).items():
    np.testing.assert_array_equal(value, inside[key])

"""Building the model, objective and sharded training state from a config."""

import functools

import jax

from jaxret import errors
from jaxret import models
from jaxret import objectives
from jaxret import registry
from jaxret.data import options as data_options
from jaxret.data import pipeline
from jaxret.inference import checkpoints as checkpoints_lib
from jaxret.inference import restore as restore_lib
from jaxret.models import capabilities
from jaxret.models import towers
from jaxret.models.load import pretrained
from jaxret.parallel import mesh as mesh_lib
from jaxret.parallel import partition
from jaxret.train import guards
from jaxret.train import microbatch
from jaxret.train import optimizer as optimizer_lib
from jaxret.train import state as state_lib
from jaxret.train import step as step_lib
from jaxret.train import warm_start


def check_config(config):
  """Checks that must fail before anything is written or compiled: names, shapes."""
  registry.resolve(config.model.name, models.MODELS, 'model')
  registry.resolve(config.loss.name, objectives.OBJECTIVES, 'loss')
  if config.on_nonfinite not in guards.POLICIES:
    raise errors.UserError(f'unknown on_nonfinite={config.on_nonfinite!r}; '
                           f'known: {", ".join(guards.POLICIES)}')
  image = config.model.image
  try:
    patch = towers.image_tower(image).sizes()['patch_size']
  except (TypeError, ValueError) as e:
    raise errors.UserError(f'model.image does not describe a ViT: {e}') from e
  if data_options.resolve(config.data).num_frames and 'temporal' not in image:
    raise errors.UserError('video data (data.num_frames > 0) needs a video tower: '
                           "model.image.temporal='mean' or 'transformer'")
  if config.data.image_size % patch:
    raise errors.UserError(
        f'data.image_size={config.data.image_size} is not divisible by the patch size '
        f'{patch} of model.image.variant={image.variant!r}; use a multiple of {patch}')
  if config.total_steps < 0:
    raise errors.UserError(f'total_steps must be >= 0, got {config.total_steps}')


class Trainable:
  """The model, objective, optimizer and sharded state layout for one config."""

  def __init__(self, config, tokenizer, mesh):
    check_config(config)
    self.config = config
    self.mesh = mesh
    self.tokenizer = tokenizer
    self.model = restore_lib.build_model(config, tokenizer)
    if data_options.resolve(config.data).num_frames:
      capabilities.require(self.model, capabilities.VideoInput, 'video data (data.num_frames > 0)')
    self.objective = objectives.build(config.loss, self.model, mesh, tokenizer)
    microbatch.check(config.microbatches, config.batch_size, mesh, self.objective,
                     config.loss.name)
    self.optimizer, self.learning_rate = optimizer_lib.build(config)
    self.abstract_state = jax.eval_shape(self._init, jax.random.PRNGKey(config.seed))
    self.state_shardings = partition.tree_shardings(
        self.abstract_state, mesh, config.sharding.rules)

  def _init(self, rng):
    params_rng, state_rng = jax.random.split(rng)
    example = pipeline.example_batch(self.config.data, self.config.data.text_len)
    params = self.objective.init_params(params_rng, example)
    return state_lib.TrainState(
        step=jax.numpy.zeros((), jax.numpy.int32), params=params,
        opt_state=self.optimizer.init(params), rng=state_rng,
        extra=self.objective.init_extra(params))

  def init_state(self):
    """A fresh state, created directly with its shardings (never whole on one device)."""
    # A trained workdir to start from (config.init.workdir), checked before compiling.
    source = (warm_start.Source(self.config, self.tokenizer, self.abstract_state.params)
              if self.config.init.workdir else None)
    state = jax.jit(self._init, out_shardings=self.state_shardings)(
        jax.random.PRNGKey(self.config.seed))
    # Pretrained weights (config.init), loaded into the fresh parameters.
    if pretrained.requested(self.config):
      state = pretrained.apply_to_state(state, self.config, self.state_shardings,
                                        self.optimizer, self.objective)
    if source is not None:
      state = warm_start.apply_to_state(source, state, self.state_shardings, self.optimizer,
                                        self.objective, self.mesh)
    # Extra state that comes from elsewhere (a frozen teacher's checkpoint).
    return state.replace(extra=self.objective.load_extra(state.extra,
                                                         self.state_shardings.extra))

  def restore_target(self):
    return checkpoints_lib.abstract_with_shardings(self.abstract_state, self.state_shardings)

  def compiled_step(self):
    """`train_step` jit-compiled with the state's and batch's shardings, state donated."""
    step = functools.partial(step_lib.train_step, objective=self.objective,
                             optimizer=self.optimizer,
                             skip_nonfinite=self.config.on_nonfinite == 'skip',
                             microbatches=self.config.microbatches)
    return jax.jit(step,
                   in_shardings=(self.state_shardings, mesh_lib.batch_sharding(self.mesh)),
                   out_shardings=(self.state_shardings, mesh_lib.replicated(self.mesh)),
                   donate_argnums=(0,))

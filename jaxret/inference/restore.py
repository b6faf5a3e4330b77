"""A trained model from a workdir, for every mode that uses one: evaluation, export,
indexing, queries, serving, re-ranking and a distillation teacher.

It sits below the objectives and the trainer, so it builds the model and the
parameters' layout from the config alone: `init_params` is the one definition of
how a model's parameters are made (the objectives' protocol uses it too).
"""

import dataclasses
from typing import Any

import jax
from jax.sharding import Mesh

from jaxret import errors
from jaxret import models
from jaxret.data import pipeline
from jaxret.data import tokenizer as tokenizer_lib
from jaxret.inference import checkpoints as checkpoints_lib
from jaxret.parallel import mesh as mesh_lib
from jaxret.parallel import partition


@dataclasses.dataclass
class Restored:
  model: Any
  params: Any
  tokenizer: tokenizer_lib.Tokenizer
  step: int
  mesh: Mesh


def build_model(config, tokenizer):
  """The model `config.model` names, sized for the tokenizer's vocabulary."""
  try:
    return models.build(config.model, vocab_size=tokenizer.vocab_size,
                        text_len=config.data.text_len)
  except TypeError as e:  # An unknown or missing model setting.
    raise errors.UserError(f'model settings do not fit {config.model.name!r}: {e}') from e


def init_params(model, rng, batch):
  """Every model is initialised from an image batch, its captions and their mask."""
  return model.init(rng, batch['image'], batch['text'], batch['text_mask'])['params']


def abstract_params(model, config):
  """The parameters' shapes and dtypes, without computing them."""
  example = pipeline.example_batch(config.data, config.data.text_len)
  return jax.eval_shape(lambda rng: init_params(model, rng, example), jax.random.PRNGKey(0))


def restore(config, workdir, step=None, mesh=None):
  """The model and parameters of checkpoint `step` (default: latest) in `workdir`."""
  mesh = mesh_lib.make_mesh(config.mesh) if mesh is None else mesh
  try:
    tokenizer = tokenizer_lib.for_workdir(config.tokenizer, config.data.text_len, workdir)
  except FileNotFoundError as e:
    raise errors.UserError(str(e)) from e
  model = build_model(config, tokenizer)
  shapes = abstract_params(model, config)
  target = checkpoints_lib.abstract_with_shardings(
      shapes, partition.tree_shardings(shapes, mesh, config.sharding.rules))
  checkpoints = checkpoints_lib.Checkpoints(workdir, read_only=True)
  try:
    params, step = checkpoints.restore_params(target, step)
  finally:
    checkpoints.close()
  return Restored(model, params, tokenizer, step, mesh)

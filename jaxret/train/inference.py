"""Loading a trained model from a workdir for evaluation, export, indexing and queries."""

import dataclasses
from typing import Any

from jax.sharding import Mesh

from jaxret import errors
from jaxret.data import tokenizer as tokenizer_lib
from jaxret.parallel import mesh as mesh_lib
from jaxret.train import checkpoint
from jaxret.train import setup


@dataclasses.dataclass
class Restored:
  model: Any
  params: Any
  tokenizer: tokenizer_lib.Tokenizer
  step: int
  mesh: Mesh


def restore(config, workdir, step=None, mesh=None):
  """The model and parameters of checkpoint `step` (default: latest) in `workdir`."""
  mesh = mesh_lib.make_mesh(config.mesh) if mesh is None else mesh
  checkpoints = checkpoint.Checkpoints(workdir, read_only=True)
  try:
    tokenizer = tokenizer_lib.for_workdir(config.tokenizer, config.data.text_len, workdir)
  except FileNotFoundError as e:
    raise errors.UserError(str(e)) from e
  trainable = setup.Trainable(config, tokenizer, mesh)
  target = checkpoint.abstract_with_shardings(trainable.abstract_state.params,
                                              trainable.state_shardings.params)
  params, step = checkpoints.restore_params(target, step)
  checkpoints.close()
  return Restored(trainable.model, params, tokenizer, step, mesh)

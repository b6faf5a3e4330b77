"""FILIP: a late-interaction dual encoder trained with token-wise contrastive loss
(`losses/filip.py`, `models/late_interaction.py`).

Loss settings (`config.loss`): `keep_fraction` (the top fraction of tokens
each example keeps before they are gathered; 1: all) and `selection_group`
(the examples whose tokens compete for that selection; must divide the
per-device batch).
"""

import functools

from jaxret.losses import filip
from jaxret.objectives import base
from jaxret.parallel import shard


class FilipObjective(base.Objective):
  """Token embeddings of the batch, gathered across devices, scored token-wise."""

  def __init__(self, model, mesh, loss_config):
    super().__init__(model)
    self.loss = shard.over_batch(
        functools.partial(filip.filip_loss, keep_fraction=loss_config.keep_fraction,
                          selection_group=loss_config.selection_group),
        mesh, num_args=5, replicated_argnums=(4,))

  def __call__(self, params, extra, batch, rng, step):
    del rng, step
    outputs = self.forward(params, batch)
    loss, metrics = self.loss(outputs['image_tokens'], outputs['text_tokens'],
                              batch['text_mask'], batch['image_id'], outputs['logit_scale'])
    return loss, metrics, extra

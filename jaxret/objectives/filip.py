"""FILIP: a late-interaction dual encoder trained with token-wise contrastive loss
(`losses/filip.py`, `models/late_interaction.py`).

Loss settings (`config.loss`): `keep_fraction` (the top fraction of tokens
each example keeps before they are gathered; 1: all) and `selection_group`
(the examples whose tokens compete for that selection; must divide the
per-device batch).
"""

import functools

from jaxret.losses import filip
from jaxret.models import dual_encoder
from jaxret.objectives import base
from jaxret.objectives import clip as clip_objective
from jaxret.parallel import shard


class FilipObjective(base.EmbeddingObjective):
  """Token embeddings of the batch, gathered across devices, scored token-wise.
  The stored log logit scale is kept <= log(100), as the dual encoder's."""

  LOSS_KEYS = ('keep_fraction', 'selection_group')
  PARAM_BOUNDS = clip_objective.LOGIT_SCALE_BOUNDS

  def __init__(self, model, mesh, loss_config, tokenizer):
    super().__init__(model, mesh, loss_config, tokenizer)
    self.loss = shard.over_batch(
        functools.partial(filip.filip_loss, keep_fraction=loss_config.keep_fraction,
                          selection_group=loss_config.selection_group),
        mesh, replicated=('logit_scale',))

  def embed(self, params, batch):
    outputs = self.forward(params, batch)
    return {'image_tokens': outputs['image_tokens'], 'text_tokens': outputs['text_tokens']}

  def loss_from_embeddings(self, params, extra, embeddings, batch, rng, step):
    del rng, step
    loss, metrics = self.loss(image_tokens=embeddings['image_tokens'],
                              text_tokens=embeddings['text_tokens'], text_mask=batch['text_mask'],
                              image_ids=batch['image_id'],
                              logit_scale=dual_encoder.clamped_logit_scale(params['logit_scale']))
    return loss, metrics, extra

"""Objectives of a plain dual encoder: a forward pass, then one sharded contrastive loss."""

from jaxret.losses import clip
from jaxret.objectives import base
from jaxret.parallel import shard


class ClipObjective(base.Objective):
  """CLIP: symmetric InfoNCE over all-gathered in-batch negatives (`losses/clip.py`).
  No extra state (the protocol is in `objectives/base.py`)."""

  def __init__(self, model, mesh, loss_config):
    del loss_config  # CLIP has no settings beyond the model's logit scale.
    super().__init__(model)
    self.loss = shard.over_batch(clip.clip_loss, mesh, num_args=4, replicated_argnums=(3,))

  def __call__(self, params, extra, batch, rng, step):
    del rng, step
    outputs = self.forward(params, batch)
    loss, metrics = self.loss(outputs['image_emb'], outputs['text_emb'], batch['image_id'],
                              outputs['logit_scale'])
    return loss, metrics, extra

"""Objectives of a plain dual encoder: a forward pass, then one sharded contrastive loss."""

from jaxret.losses import clip
from jaxret.parallel import shard


class ClipObjective:
  """CLIP: symmetric InfoNCE over all-gathered in-batch negatives (`losses/clip.py`).

  The objective protocol every method follows:
    init_params(rng, example_batch) -> the model's parameters,
    init_extra(params) -> extra state the step carries (queues, momentum
      encoders; empty here),
    __call__(params, extra, batch, rng, step) -> (loss, metrics, new_extra),
    after_update(params, extra) -> extra, run after the optimizer step.
  """

  def __init__(self, model, mesh, loss_config):
    del loss_config  # CLIP has no settings beyond the model's logit scale.
    self.model = model
    self.loss = shard.over_batch(clip.clip_loss, mesh, num_args=4, replicated_argnums=(3,))

  def init_params(self, rng, batch):
    return self.model.init(rng, batch['image'], batch['text'], batch['text_mask'])['params']

  def init_extra(self, params):
    del params
    return {}

  def __call__(self, params, extra, batch, rng, step):
    del rng, step
    outputs, _ = self.model.apply({'params': params}, batch['image'], batch['text'],
                                  batch['text_mask'], train=True)
    loss, metrics = self.loss(outputs['image_emb'], outputs['text_emb'], batch['image_id'],
                              outputs['logit_scale'])
    return loss, metrics, extra

  def after_update(self, params, extra):
    del params
    return extra

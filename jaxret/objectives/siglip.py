"""SigLIP: a dual encoder with a learnable temperature and bias, trained with
the pairwise sigmoid loss (`losses/siglip.py`)."""

from jaxret import errors
from jaxret.losses import siglip
from jaxret.objectives import base
from jaxret.parallel import shard


class SiglipObjective(base.Objective):
  """The dual encoder's logit scale is SigLIP's temperature t (config
  `model.logit_scale_init = 10`) and its logit bias is b (`model.logit_bias_init
  = -10`); both are scalars, so they get no weight decay."""

  def __init__(self, model, mesh, loss_config):
    del loss_config  # The loss has no settings beyond the model's t and b.
    if getattr(model, 'logit_bias_init', None) is None:
      raise errors.UserError('the siglip loss needs a model with a logit bias: set '
                             'model.logit_bias_init (SigLIP: -10.0) and model.logit_scale_init '
                             '(SigLIP: 10.0)')
    super().__init__(model)
    self.loss = shard.over_batch(siglip.siglip_loss, mesh, num_args=5, replicated_argnums=(3, 4))

  def __call__(self, params, extra, batch, rng, step):
    del rng, step
    outputs = self.forward(params, batch)
    loss, metrics = self.loss(outputs['image_emb'], outputs['text_emb'], batch['image_id'],
                              outputs['logit_scale'], outputs['logit_bias'])
    return loss, metrics, extra

"""SigLIP: a dual encoder with a learnable temperature and bias, trained with
the pairwise sigmoid loss (`losses/siglip.py`)."""

from jaxret import errors
from jaxret.losses import siglip
from jaxret.models import dual_encoder
from jaxret.objectives import clip as clip_objective
from jaxret.parallel import shard


class SiglipObjective(clip_objective.PooledObjective):
  """The dual encoder's logit scale is SigLIP's temperature t (config
  `model.logit_scale_init = 10`) and its logit bias is b (`model.logit_bias_init
  = -10`); both are scalars, so they get no weight decay. The stored log t is
  kept <= log(100), the dual encoder's bound."""

  LOSS_KEYS = ()  # No settings beyond the model's t and b.
  PARAM_BOUNDS = clip_objective.LOGIT_SCALE_BOUNDS

  def __init__(self, model, mesh, loss_config, tokenizer):
    super().__init__(model, mesh, loss_config, tokenizer)
    if not isinstance(model, dual_encoder.DualEncoder) or model.logit_bias_init is None:
      raise errors.UserError('the siglip loss needs a model with a logit bias: set '
                             'model.logit_bias_init (SigLIP: -10.0) and model.logit_scale_init '
                             '(SigLIP: 10.0)')
    self.loss = shard.over_batch(siglip.siglip_loss, mesh, replicated=('temperature', 'bias'))

  def loss_from_embeddings(self, params, extra, embeddings, batch, rng, step):
    del rng, step
    loss, metrics = self.loss(image_emb=embeddings['image_emb'],
                              text_emb=embeddings['text_emb'], image_ids=batch['image_id'],
                              temperature=dual_encoder.clamped_logit_scale(params['logit_scale']),
                              bias=params['logit_bias'])
    return loss, metrics, extra

"""Training the slow model: the bidirectional captioning loss (`losses/caption.py`)."""

from jaxret.losses import caption
from jaxret.parallel import shard


class CaptionObjective:
  """−mean_i [log p_fwd(y_i | x_i) + log p_bwd(y_i | x_i)] with teacher forcing.

  Follows the protocol of `objectives/dual.py`; no cross-device negatives, only
  the psum of the per-example log-likelihoods.
  """

  def __init__(self, model, mesh, loss_config):
    del loss_config
    self.model = model
    self.loss = shard.over_batch(caption.captioning_loss, mesh, num_args=2)

  def init_params(self, rng, batch):
    return self.model.init(rng, batch['image'], batch['text'], batch['text_mask'])['params']

  def init_extra(self, params):
    del params
    return {}

  def __call__(self, params, extra, batch, rng, step):
    del rng, step
    outputs, _ = self.model.apply({'params': params}, batch['image'], batch['text'],
                                  batch['text_mask'], train=True)
    loss, metrics = self.loss(outputs['log_p_forward'], outputs['log_p_backward'])
    return loss, metrics, extra

  def after_update(self, params, extra):
    del params
    return extra

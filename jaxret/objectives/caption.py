"""Training the slow model: the bidirectional captioning loss (`losses/caption.py`)."""

from jaxret.losses import caption
from jaxret.objectives import base
from jaxret.parallel import shard


class CaptionObjective(base.Objective):
  """−mean_i [log p_fwd(y_i | x_i) + log p_bwd(y_i | x_i)] with teacher forcing.

  Follows the protocol of `objectives/base.py`; no cross-device negatives, only
  the psum of the per-example log-likelihoods.
  """

  LOSS_KEYS = ()
  CHUNKING = 'per_example'  # A mean over examples: microbatches accumulate gradients.

  def __init__(self, model, mesh, loss_config, tokenizer):
    super().__init__(model, mesh, loss_config, tokenizer)
    self.loss = shard.over_batch(caption.captioning_loss, mesh)

  def __call__(self, params, extra, batch, rng, step):
    del rng, step
    outputs = self.forward(params, batch)
    loss, metrics = self.loss(log_p_forward=outputs['log_p_forward'],
                              log_p_backward=outputs['log_p_backward'])
    return loss, metrics, extra

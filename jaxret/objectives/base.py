"""The objective protocol, with the defaults of an objective that carries no state.

Every training objective (`objectives/__init__.py`) provides
  init_params(rng, example_batch) -> the model's parameters,
  init_extra(params) -> the extra state the step carries (queues, memories,
    momentum encoders, a frozen teacher; {} here),
  __call__(params, extra, batch, rng, step) -> (loss, metrics, new_extra),
  after_update(params, extra) -> extra, run after the optimizer step (an EMA;
    nothing here).
"""

from jaxret.inference import restore as restore_lib


class Objective:
  """Defaults for an image–text model called as model(image, text, text_mask)."""

  def __init__(self, model):
    self.model = model

  def init_params(self, rng, batch):
    return restore_lib.init_params(self.model, rng, batch)

  def init_extra(self, params):
    del params
    return {}

  def forward(self, params, batch):
    """The model's training-mode outputs on the batch's images and captions."""
    outputs, _ = self.model.apply({'params': params}, batch['image'], batch['text'],
                                  batch['text_mask'], train=True)
    return outputs

  def __call__(self, params, extra, batch, rng, step):
    raise NotImplementedError

  def after_update(self, params, extra):
    del params
    return extra

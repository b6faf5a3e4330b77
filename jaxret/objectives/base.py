"""The objective protocol, with the defaults of an objective that carries no state.

Every training objective (`objectives/__init__.py`) is built as
`Objective(model, mesh, loss_config, tokenizer)` and declares
  LOSS_KEYS: the keys of `config.loss` it reads (besides `name`); any other key
    is refused, so a setting of another loss never passes silently,
  PARAM_BOUNDS: {top-level parameter name: (low, high)} that the training step
    clamps the parameters into after every optimizer update ({} here),
  CHUNKING: how the step may split the batch into `config.microbatches` chunks
    (`train/microbatch.py`): 'embeddings' (gradient caching: an
    `EmbeddingObjective`'s `embed` per chunk, `loss_from_embeddings` on the
    global batch), 'per_example' (a mean of per-example losses: the gradient
    accumulates chunk by chunk) or None (refused, with CHUNKING_REFUSAL as the reason).
The trainer calls, in this order:
  init_params(rng, example_batch) -> the model's parameters,
  init_extra(params) -> the extra state the step carries (queues, memories,
    momentum encoders, a frozen teacher's placeholders; {} here),
  load_extra(extra, shardings) -> extra, once on a fresh state: what comes from
    elsewhere (a frozen teacher's checkpoint; nothing here),
  __call__(params, extra, batch, rng, step) -> (loss, metrics, new_extra),
  clamp_params(params) -> params, after the optimizer update (PARAM_BOUNDS),
  after_update(params, extra) -> extra, after the clamp (an EMA; nothing here).
"""

import abc

import jax.numpy as jnp

from jaxret import errors
from jaxret.inference import restore as restore_lib


class Objective(abc.ABC):
  """Defaults for an image–text model called as model(image, text, text_mask)."""

  LOSS_KEYS: tuple[str, ...] = ()
  PARAM_BOUNDS: dict[str, tuple[float | None, float | None]] = {}
  CHUNKING: str | None = None
  CHUNKING_REFUSAL = 'its loss is not split into embeddings and a loss on them'

  def __init__(self, model, mesh, loss_config, tokenizer):
    del tokenizer  # Read by the objectives that need it (ALBEF's [MASK]).
    self.check_settings(loss_config)
    self.model = model
    self.mesh = mesh

  @classmethod
  def check_settings(cls, loss_config):
    """Refuses keys of `loss_config` that this objective does not read."""
    unknown = sorted(set(loss_config.keys()) - {'name'} - set(cls.LOSS_KEYS))
    if unknown:
      names = ', '.join(f'loss.{key}' for key in unknown)
      what = 'is not a setting' if len(unknown) == 1 else 'are not settings'
      raise errors.UserError(f'{names} {what} of loss {loss_config["name"]!r} '
                             f'(its settings: {", ".join(cls.LOSS_KEYS) or "none"})')

  def init_params(self, rng, batch):
    return restore_lib.init_params(self.model, rng, batch)

  def init_extra(self, params):
    del params
    return {}

  def load_extra(self, extra, shardings):
    del shardings
    return extra

  def forward(self, params, batch):
    """The model's training-mode outputs on the batch's images and captions."""
    outputs, _ = self.model.apply({'params': params}, batch['image'], batch['text'],
                                  batch['text_mask'], train=True)
    return outputs

  @abc.abstractmethod
  def __call__(self, params, extra, batch, rng, step):
    """(loss, metrics, new extra state) of one global batch; differentiated in `params`."""

  def clamp_params(self, params):
    """`params` with the PARAM_BOUNDS parameters clamped into their bounds.

    A bound applied only in the forward pass (a clamped logit scale) gives the
    stored parameter a zero gradient once it is past the bound, so it could
    never come back; clamping the parameter itself after each update (as
    open_clip does) keeps it where the gradient reaches it.
    """
    if not self.PARAM_BOUNDS:
      return params
    return {**params, **{name: jnp.clip(params[name], low, high)
                         for name, (low, high) in self.PARAM_BOUNDS.items()}}

  def after_update(self, params, extra):
    del params
    return extra


class EmbeddingObjective(Objective):
  """An objective whose loss reads only per-example embeddings (and the batch's
  labels), so gradient caching applies (`CHUNKING = 'embeddings'`):
    embed(params, batch) -> {name: (rows, ...)} per-example embeddings, with no
      randomness (a chunk's embeddings must not depend on the chunking),
    embed_keys(extra, batch) -> {name: (rows, ...)} per-example embeddings
      read from the extra state and never differentiated (a momentum encoder's
      keys); {} here,
    loss_from_embeddings(params, extra, embeddings, batch, rng, step)
      -> (loss, metrics, new extra) on the global batch's embeddings (both
      dicts in one); any randomness of this loss is drawn here, for the global
      batch, and the parameters it reads directly (a logit scale) are
      differentiated here.
  An objective that adds per-example terms needing more than embeddings
  (ALBEF's ITM and MLM) declares them for the chunked step in two more hooks:
    draw(params, extra, embeddings, batch, rng, step) -> the terms'
      randomness, drawn once for the global batch from the (undifferentiated)
      embeddings (None here),
    chunk_pass(params, extra, batch, draws, select, step)
      -> (the chunk's `embed` output, loss, metrics): the chunk is
      `select(batch)` (`select` takes any global-batch tree to this chunk's
      rows); loss and metrics are this chunk's share of the global batch's
      (they are summed over chunks). Here: `embed` and no terms.
  """

  CHUNKING = 'embeddings'

  @abc.abstractmethod
  def embed(self, params, batch):
    """Per-example embeddings of the batch, every leaf with the batch's leading axis."""

  def embed_keys(self, extra, batch):
    del extra, batch
    return {}

  @abc.abstractmethod
  def loss_from_embeddings(self, params, extra, embeddings, batch, rng, step):
    """(loss, metrics, new extra state) from the global batch's embeddings."""

  def draw(self, params, extra, embeddings, batch, rng, step):
    del params, extra, embeddings, batch, rng, step
    return None

  def chunk_pass(self, params, extra, batch, draws, select, step):
    del extra, draws, step
    return self.embed(params, select(batch)), jnp.zeros((), jnp.float32), {}

  def __call__(self, params, extra, batch, rng, step):
    embeddings = {**self.embed(params, batch), **self.embed_keys(extra, batch)}
    return self.loss_from_embeddings(params, extra, embeddings, batch, rng, step)

"""ALBEF: ITC with a queue and momentum distillation, ITM on hard negatives, MLM."""

import jax
import jax.numpy as jnp

from jaxret import errors
from jaxret.losses import albef as albef_losses
from jaxret.losses import itm
from jaxret.losses import mlm
from jaxret.losses import queue as queue_lib
from jaxret.models import albef as albef_model
from jaxret.objectives import base
from jaxret.objectives import momentum as momentum_lib
from jaxret.parallel import shard


class AlbefObjective(base.Objective):
  """L = ITC + w_itm·ITM + w_mlm·MLM on an `models/albef.py` model.

  - ITC (`losses/albef.py`): online embeddings against the momentum
    embeddings of the global batch and the queues, targets distilled from the
    momentum model with α ramped from 0 to `alpha` over `alpha_warmup_steps`
    (ALBEF: the first epoch).
  - ITM (`losses/itm.py`): for each pair, a positive, the text with a hard
    negative image and the image with a hard negative text, drawn from the
    global batch with probability softmax of the (stop-gradient) ITC
    similarities, never with the same image id; a pair with no other image in
    the batch gets weight 0, and a global batch of one is refused.
  - MLM (`losses/mlm.py`): 15% of the tokens masked 80/10/10 (never padding
    or [CLS]), predicted by the fusion encoder from the corrupted text and the
    image, distilled from the momentum model's predictions with weight α.

  Loss settings: `queue_size` (multiple of the global batch; ALBEF 65536),
  `momentum` (0.995), `alpha` (0.4), `alpha_warmup_steps`, `itm_weight`,
  `mlm_weight` (0 skips that loss), `mlm_probability` (0.15). The MLM's mask
  id is the training tokenizer's [MASK].

  Extra state: `momentum` (EMA of all parameters) and `queue` (`ids`,
  `image`, `text`, `ptr`), which starts empty (slots left out of the softmax
  until written). The ITC uses the queue as it was before the step;
  the step's momentum keys are then enqueued; `after_update` moves the EMA.
  Randomness (negatives, masking) is drawn from the step's rng on the global
  batch, so it is the same on any number of devices. The stored temperature
  is kept in [0.001, 0.5] after every update, the bounds of the forward clamp.
  """

  LOSS_KEYS = ('queue_size', 'momentum', 'alpha', 'alpha_warmup_steps', 'itm_weight',
               'mlm_weight', 'mlm_probability')
  CHUNKING_REFUSAL = 'its momentum queues, ITM negatives and MLM masks are not chunked'
  PARAM_BOUNDS = {'temp': (albef_model.MIN_TEMPERATURE, albef_model.MAX_TEMPERATURE)}

  def __init__(self, model, mesh, loss_config, tokenizer):
    super().__init__(model, mesh, loss_config, tokenizer)
    self.queue_size = int(loss_config.queue_size)
    self.momentum = float(loss_config.momentum)
    if not 0 <= self.momentum < 1:
      raise errors.UserError(f'loss.momentum must be in [0, 1), got {self.momentum}')
    self.alpha = float(loss_config.alpha)
    self.alpha_warmup_steps = int(loss_config.alpha_warmup_steps)
    self.itm_weight = float(loss_config.itm_weight)
    self.mlm_weight = float(loss_config.mlm_weight)
    self.mlm_probability = float(loss_config.mlm_probability)
    self.mask_token_id = tokenizer.mask_id
    if self.mlm_weight and self.mask_token_id is None:
      raise errors.UserError('ALBEF\'s MLM needs a tokenizer with a [MASK] token, and this '
                             'one has none: use another tokenizer, or loss.mlm_weight=0')
    self.itc_loss = shard.over_batch(
        albef_losses.itc_loss, mesh,
        replicated=('image_queue', 'text_queue', 'queue_ids', 'temperature', 'alpha'))
    self.itm_loss = shard.over_batch(itm.itm_loss, mesh)
    self.mlm_loss = shard.over_batch(mlm.mlm_loss, mesh, replicated=('alpha',))

  def init_extra(self, params):
    dim = self.model.embed_dim
    return {'momentum': momentum_lib.copy(params),
            'queue': queue_lib.init(self.queue_size, {'image': dim, 'text': dim})}

  def _apply(self, params, *args, method):
    return self.model.apply({'params': params}, *args, method=method)

  def __call__(self, params, extra, batch, rng, step):
    global_batch = batch['image_id'].shape[0]
    queue_lib.check_size(self.queue_size, global_batch)
    if self.itm_weight and global_batch < 2:
      raise errors.UserError('ALBEF\'s ITM draws negatives from the other pairs of the batch: '
                             'use a global batch_size of at least 2 (or loss.itm_weight=0)')
    images, tokens, mask, ids = batch['image'], batch['text'], batch['text_mask'], batch['image_id']
    alpha = momentum_lib.ramp(step, self.alpha_warmup_steps, self.alpha)
    online = self._apply(params, images, tokens, mask, True, method=self.model.features)
    ema = jax.lax.stop_gradient(
        self._apply(extra['momentum'], images, tokens, mask, True, method=self.model.features))
    queue = extra['queue']
    temperature = online['temperature']
    loss, metrics = self.itc_loss(
        image_emb=online['image_emb'], text_emb=online['text_emb'],
        image_emb_m=ema['image_emb'], text_emb_m=ema['text_emb'], image_ids=ids,
        image_queue=queue['image'], text_queue=queue['text'], queue_ids=queue['ids'],
        temperature=temperature, alpha=alpha)
    itm_rng, mlm_rng = jax.random.split(rng)
    if self.itm_weight:
      itm_value, itm_metrics = self._itm(params, online, ema, mask, ids, itm_rng)
      loss += self.itm_weight * itm_value
      metrics.update(itm_metrics)
    if self.mlm_weight:
      mlm_value, mlm_metrics = self._mlm(params, extra['momentum'], online, ema, tokens, mask,
                                         alpha, mlm_rng)
      loss += self.mlm_weight * mlm_value
      metrics.update(mlm_metrics)
    new_queue = queue_lib.enqueue(queue, ids, image=ema['image_emb'], text=ema['text_emb'])
    return loss, metrics, {**extra, 'queue': new_queue}

  def _itm(self, params, online, ema, mask, ids, rng):
    """Positives, (text, hard negative image) and (hard negative text, image) pairs."""
    temperature = jax.lax.stop_gradient(online['temperature'])
    image_emb = jax.lax.stop_gradient(online['image_emb'])
    text_emb = jax.lax.stop_gradient(online['text_emb'])
    # Similarities over the global batch, as in the ITC (online query, momentum key).
    sim_i2t = image_emb @ ema['text_emb'].T / temperature
    sim_t2i = text_emb @ ema['image_emb'].T / temperature
    text_rng, image_rng = jax.random.split(rng)
    negative_text, has_negative_text = itm.sample_hard_negatives(text_rng, sim_i2t, ids, ids)
    negative_image, has_negative_image = itm.sample_hard_negatives(image_rng, sim_t2i, ids, ids)
    text_tokens, image_tokens = online['text_tokens'], online['image_tokens']
    pair_text = jnp.concatenate([text_tokens, text_tokens, text_tokens[negative_text]])
    pair_mask = jnp.concatenate([mask, mask, mask[negative_text]])
    pair_image = jnp.concatenate([image_tokens, image_tokens[negative_image], image_tokens])
    logits = self._apply(params, pair_text, pair_mask, pair_image, method=self.model.itm_logits)
    size = ids.shape[0]
    labels = jnp.concatenate([jnp.ones(size, jnp.int32), jnp.zeros(2 * size, jnp.int32)])
    weights = jnp.concatenate([jnp.ones(size, jnp.float32), has_negative_image.astype(jnp.float32),
                               has_negative_text.astype(jnp.float32)])
    return self.itm_loss(logits=logits, labels=labels, weights=weights)

  def _mlm(self, params, momentum_params, online, ema, tokens, mask, alpha, rng):
    inputs, selected = mlm.mask_tokens(rng, tokens, mask, mask_id=self.mask_token_id,
                                       vocab_size=self.model.vocab_size,
                                       probability=self.mlm_probability)
    logits = self._apply(params, inputs, mask, online['image_tokens'], True,
                         method=self.model.mlm_logits)
    teacher = jax.lax.stop_gradient(self._apply(momentum_params, inputs, mask,
                                                ema['image_tokens'], True,
                                                method=self.model.mlm_logits))
    return self.mlm_loss(logits=logits, momentum_logits=teacher, labels=tokens,
                         selected=selected, alpha=alpha)

  def after_update(self, params, extra):
    return {**extra, 'momentum': momentum_lib.ema(extra['momentum'], params, self.momentum)}

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


class AlbefObjective(base.EmbeddingObjective):
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
  batch, so it is the same on any number of devices and microbatches. With
  `microbatches` > 1 (`train/microbatch.py`), the ITC is gradient-cached
  (`embed`, `embed_keys`, `loss_from_embeddings`), and the ITM and MLM terms
  are added chunk by chunk (`draw`, `chunk_pass`), each chunk weighted by
  its share of the global batch's pairs and masked tokens; a chunk encodes
  its hard negatives again from their images and captions (wherever they
  are in the global batch) and its images with the momentum encoder for the
  MLM teacher: two image-tower passes more than one pass. The stored temperature
  is kept in [0.001, 0.5] after every update, the bounds of the forward clamp.
  """

  LOSS_KEYS = ('queue_size', 'momentum', 'alpha', 'alpha_warmup_steps', 'itm_weight',
               'mlm_weight', 'mlm_probability')
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
    self.hard_negatives = shard.over_batch(itm.hard_negatives, mesh,
                                           replicated=('rng', 'temperature'),
                                           out_specs=shard.batch_spec(mesh))
    self.mlm_loss = shard.over_batch(mlm.mlm_loss, mesh, replicated=('alpha',))

  def init_extra(self, params):
    dim = self.model.embed_dim
    return {'momentum': momentum_lib.copy(params),
            'queue': queue_lib.init(self.queue_size, {'image': dim, 'text': dim})}

  def _check_batch(self, global_batch):
    queue_lib.check_size(self.queue_size, global_batch)
    if self.itm_weight and global_batch < 2:
      raise errors.UserError('ALBEF\'s ITM draws negatives from the other pairs of the batch: '
                             'use a global batch_size of at least 2 (or loss.itm_weight=0)')

  def _apply(self, params, *args, method):
    return self.model.apply({'params': params}, *args, method=method)

  def _features(self, params, batch):
    return self._apply(params, batch['image'], batch['text'], batch['text_mask'], True,
                       method=self.model.features)

  def embed(self, params, batch):
    online = self._features(params, batch)
    return {'image_emb': online['image_emb'], 'text_emb': online['text_emb']}

  def embed_keys(self, extra, batch):
    """The momentum model's embeddings (no gradient): the ITC's keys and its soft targets."""
    ema = jax.lax.stop_gradient(self._features(extra['momentum'], batch))
    return {'image_key': ema['image_emb'], 'text_key': ema['text_emb']}

  def loss_from_embeddings(self, params, extra, embeddings, batch, rng, step):
    """The ITC against the queue as it was before the step; then the step's keys are enqueued."""
    del rng
    ids = batch['image_id']
    self._check_batch(ids.shape[0])
    queue = extra['queue']
    loss, metrics = self.itc_loss(
        image_emb=embeddings['image_emb'], text_emb=embeddings['text_emb'],
        image_emb_m=embeddings['image_key'], text_emb_m=embeddings['text_key'], image_ids=ids,
        image_queue=queue['image'], text_queue=queue['text'], queue_ids=queue['ids'],
        temperature=self._apply(params, method=self.model.clamped_temperature),
        alpha=momentum_lib.ramp(step, self.alpha_warmup_steps, self.alpha))
    new_queue = queue_lib.enqueue(queue, ids, image=embeddings['image_key'],
                                  text=embeddings['text_key'])
    return loss, metrics, {**extra, 'queue': new_queue}

  def draw(self, params, extra, embeddings, batch, rng, step):
    """ITM's hard negatives and MLM's masking, for the global batch.

    ITM: for each pair, a negative text and a negative image drawn with
    probability softmax of the ITC similarities (online query, momentum key,
    no gradient), never with the same image id, each pair with its own key
    (`itm.hard_negatives`)."""
    del extra, step
    itm_rng, mlm_rng = jax.random.split(rng)
    draws = {}
    if self.itm_weight:
      temperature = jax.lax.stop_gradient(
          self._apply(params, method=self.model.clamped_temperature))
      ids = batch['image_id']
      text_rng, image_rng = jax.random.split(itm_rng)
      negative_text, has_negative_text = self.hard_negatives(
          rng=text_rng, queries=embeddings['image_emb'], keys=embeddings['text_key'],
          row_ids=ids, temperature=temperature)
      negative_image, has_negative_image = self.hard_negatives(
          rng=image_rng, queries=embeddings['text_emb'], keys=embeddings['image_key'],
          row_ids=ids, temperature=temperature)
      draws['itm'] = {'negative_text': negative_text, 'has_negative_text': has_negative_text,
                      'negative_image': negative_image, 'has_negative_image': has_negative_image}
    if self.mlm_weight:
      inputs, selected = mlm.mask_tokens(mlm_rng, batch['text'], batch['text_mask'],
                                         mask_id=self.mask_token_id,
                                         vocab_size=self.model.vocab_size,
                                         probability=self.mlm_probability)
      draws['mlm'] = {'inputs': inputs, 'selected': selected}
    return draws

  def __call__(self, params, extra, batch, rng, step):
    """One pass: the hard negatives' tokens are taken from the batch's own tokens."""
    self._check_batch(batch['image_id'].shape[0])
    online = self._features(params, batch)
    ema = jax.lax.stop_gradient(self._features(extra['momentum'], batch))
    embeddings = {'image_emb': online['image_emb'], 'text_emb': online['text_emb'],
                  'image_key': ema['image_emb'], 'text_key': ema['text_emb']}
    loss, metrics, new_extra = self.loss_from_embeddings(params, extra, embeddings, batch, rng,
                                                         step)
    draws = self.draw(params, extra, embeddings, batch, rng, step)
    negatives = None
    if self.itm_weight:
      negative_text, negative_image = draws['itm']['negative_text'], draws['itm']['negative_image']
      negatives = (online['text_tokens'][negative_text], batch['text_mask'][negative_text],
                   online['image_tokens'][negative_image])
    terms, term_metrics = self._terms(params, extra, online, ema['image_tokens'], batch, draws,
                                      negatives, step, shares=(1.0, 1.0))
    return loss + terms, {**metrics, **term_metrics}, new_extra

  def chunk_pass(self, params, extra, batch, draws, select, step):
    """One chunk's ITC embeddings, and its share of the ITM and MLM terms."""
    rows, row_draws = select(batch), select(draws)
    online = self._features(params, rows)
    negatives, ema_image_tokens, shares = None, None, [1.0, 1.0]
    if self.itm_weight:
      negative_text = row_draws['itm']['negative_text']
      negative_mask = jnp.take(batch['text_mask'], negative_text, axis=0)
      _, text_out = self._apply(params, jnp.take(batch['text'], negative_text, axis=0),
                                negative_mask, True, method=self.model.encode_text)
      _, image_out = self._apply(
          params, jnp.take(batch['image'], row_draws['itm']['negative_image'], axis=0), True,
          method=self.model.encode_image)
      negatives = (text_out['tokens'], negative_mask, image_out['encoded'])
      shares[0] = _itm_weight(row_draws['itm']) / _itm_weight(draws['itm'])
    if self.mlm_weight:
      _, ema_out = self._apply(extra['momentum'], rows['image'], True,
                               method=self.model.encode_image)
      ema_image_tokens = jax.lax.stop_gradient(ema_out['encoded'])
      shares[1] = (jnp.sum(row_draws['mlm']['selected'])
                   / jnp.maximum(jnp.sum(draws['mlm']['selected']), 1))
    terms, metrics = self._terms(params, extra, online, ema_image_tokens, rows, row_draws,
                                 negatives, step, shares=shares)
    embeddings = {'image_emb': online['image_emb'], 'text_emb': online['text_emb']}
    return embeddings, terms, metrics

  def _terms(self, params, extra, online, ema_image_tokens, batch, draws, negatives, step,
             shares):
    """w_itm·ITM + w_mlm·MLM of these rows, each times its share of the global batch's
    (1 in one pass); `negatives`: the hard negatives' (text tokens, text mask, image tokens)."""
    loss, metrics = jnp.zeros((), jnp.float32), {}
    if self.itm_weight:
      value, itm_metrics = self._itm(params, online, batch['text_mask'], draws['itm'], negatives)
      loss += self.itm_weight * shares[0] * value
      metrics.update({name: shares[0] * v for name, v in itm_metrics.items()})
    if self.mlm_weight:
      alpha = momentum_lib.ramp(step, self.alpha_warmup_steps, self.alpha)
      value, mlm_metrics = self._mlm(params, extra['momentum'], online['image_tokens'],
                                     ema_image_tokens, batch, draws['mlm'], alpha)
      loss += self.mlm_weight * shares[1] * value
      metrics.update({name: shares[1] * v for name, v in mlm_metrics.items()})
    return loss, metrics

  def _itm(self, params, online, mask, draws, negatives):
    """Positives, (text, hard negative image) and (hard negative text, image) pairs."""
    negative_text_tokens, negative_mask, negative_image_tokens = negatives
    text_tokens, image_tokens = online['text_tokens'], online['image_tokens']
    pair_text = jnp.concatenate([text_tokens, text_tokens, negative_text_tokens])
    pair_mask = jnp.concatenate([mask, mask, negative_mask])
    pair_image = jnp.concatenate([image_tokens, negative_image_tokens, image_tokens])
    logits = self._apply(params, pair_text, pair_mask, pair_image, method=self.model.itm_logits)
    size = mask.shape[0]
    labels = jnp.concatenate([jnp.ones(size, jnp.int32), jnp.zeros(2 * size, jnp.int32)])
    weights = jnp.concatenate([jnp.ones(size, jnp.float32),
                               draws['has_negative_image'].astype(jnp.float32),
                               draws['has_negative_text'].astype(jnp.float32)])
    return self.itm_loss(logits=logits, labels=labels, weights=weights)

  def _mlm(self, params, momentum_params, image_tokens, ema_image_tokens, batch, draws, alpha):
    inputs, mask = draws['inputs'], batch['text_mask']
    logits = self._apply(params, inputs, mask, image_tokens, True, method=self.model.mlm_logits)
    teacher = jax.lax.stop_gradient(self._apply(momentum_params, inputs, mask, ema_image_tokens,
                                                True, method=self.model.mlm_logits))
    return self.mlm_loss(logits=logits, momentum_logits=teacher, labels=batch['text'],
                         selected=draws['selected'], alpha=alpha)

  def after_update(self, params, extra):
    return {**extra, 'momentum': momentum_lib.ema(extra['momentum'], params, self.momentum)}


def _itm_weight(draws):
  """Σ of the ITM pairs' weights: every positive, and each negative that could be drawn."""
  return (draws['has_negative_text'].shape[0] + jnp.sum(draws['has_negative_text'])
          + jnp.sum(draws['has_negative_image']))

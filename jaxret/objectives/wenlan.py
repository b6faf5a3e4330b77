"""WenLan/BriVL (MoCo across modalities): momentum key encoders and two key queues."""

import functools

import jax

from jaxret import errors
from jaxret.losses import wenlan
from jaxret.losses import queue as queue_lib
from jaxret.objectives import base
from jaxret.objectives import momentum as momentum_lib
from jaxret.parallel import shard

QUEUE_INITS = ('random', 'empty')


class WenLanObjective(base.EmbeddingObjective):
  """Image queries against text keys (the momentum text encoder's, plus a text
  queue) and text queries against image keys and an image queue
  (`losses/wenlan.py`), on a dual encoder.

  Loss settings: `queue_size` (K, a multiple of the global batch; BriVL: 9600),
  `momentum` (BriVL: 0.99), `temperature` (fixed; 0.07), `exclude_same_id`
  (queued keys of the query's own image are not negatives), `queue_init`
  ('random': the queues start with random unit keys, negatives from the first
  step, as in MoCo and BriVL; 'empty': empty slots do not count, so the first
  step's loss is exactly 0, with no gradient). The dual encoder's learnable
  logit scale is not used (T is fixed).

  Extra state: `momentum` (the EMA of the parameters) and `queue` (`ids`,
  `image`, `text`, `ptr`). Each step enqueues the momentum keys of the whole
  global batch after the loss (once per step, also in microbatches: the keys
  are `embed_keys`, computed chunk by chunk); `after_update` moves the EMA.
  """

  LOSS_KEYS = ('queue_size', 'momentum', 'temperature', 'exclude_same_id', 'queue_init')

  def __init__(self, model, mesh, loss_config, tokenizer):
    super().__init__(model, mesh, loss_config, tokenizer)
    if loss_config.queue_init not in QUEUE_INITS:
      raise errors.UserError(f'unknown loss.queue_init={loss_config.queue_init!r}; '
                             f'known: {", ".join(QUEUE_INITS)}')
    self.queue_init = loss_config.queue_init
    self.queue_size = int(loss_config.queue_size)
    self.momentum = float(loss_config.momentum)
    if not 0 <= self.momentum < 1:
      raise errors.UserError(f'loss.momentum must be in [0, 1), got {self.momentum}')
    loss_fn = functools.partial(wenlan.wenlan_loss, temperature=float(loss_config.temperature),
                                exclude_same_id=bool(loss_config.exclude_same_id))
    self.loss = shard.over_batch(loss_fn, mesh,
                                 replicated=('image_queue', 'text_queue', 'queue_ids'))

  def init_extra(self, params):
    dim = self.model.embed_dim
    # A fixed seed: the initial keys only stand in as negatives until overwritten.
    rng = jax.random.PRNGKey(0) if self.queue_init == 'random' else None
    return {'momentum': momentum_lib.copy(params),
            'queue': queue_lib.init(self.queue_size, {'image': dim, 'text': dim}, rng=rng)}

  def embed(self, params, batch):
    outputs = self.forward(params, batch)
    return {'image_emb': outputs['image_emb'], 'text_emb': outputs['text_emb']}

  def embed_keys(self, extra, batch):
    """The momentum encoder's keys (no gradient)."""
    keys = jax.lax.stop_gradient(self.embed(extra['momentum'], batch))
    return {'image_key': keys['image_emb'], 'text_key': keys['text_emb']}

  def loss_from_embeddings(self, params, extra, embeddings, batch, rng, step):
    del params, rng, step
    queue_lib.check_size(self.queue_size, batch['image_id'].shape[0])
    queue = extra['queue']
    loss, metrics = self.loss(image_emb=embeddings['image_emb'], text_emb=embeddings['text_emb'],
                              image_emb_m=embeddings['image_key'],
                              text_emb_m=embeddings['text_key'], image_ids=batch['image_id'],
                              image_queue=queue['image'], text_queue=queue['text'],
                              queue_ids=queue['ids'])
    new_queue = queue_lib.enqueue(queue, batch['image_id'], image=embeddings['image_key'],
                                  text=embeddings['text_key'])
    return loss, metrics, {**extra, 'queue': new_queue}

  def after_update(self, params, extra):
    return {**extra, 'momentum': momentum_lib.ema(extra['momentum'], params, self.momentum)}

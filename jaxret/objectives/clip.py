"""Objectives of a plain dual encoder: a forward pass, then one sharded contrastive loss."""

import numpy as np

from jaxret.losses import clip
from jaxret.models import dual_encoder
from jaxret.objectives import base
from jaxret.parallel import shard

# The dual encoder's stored log logit scale, kept <= log(100) (open_clip's clamp).
LOGIT_SCALE_BOUNDS = {'logit_scale': (None, float(np.log(dual_encoder.MAX_LOGIT_SCALE)))}


class PooledObjective(base.EmbeddingObjective):
  """An objective on the dual encoder's pooled embeddings (`image_emb`, `text_emb`)."""

  def embed(self, params, batch):
    outputs = self.forward(params, batch)
    return {'image_emb': outputs['image_emb'], 'text_emb': outputs['text_emb']}


class ClipObjective(PooledObjective):
  """CLIP: symmetric InfoNCE over all-gathered in-batch negatives (`losses/clip.py`).
  No extra state (the protocol is in `objectives/base.py`)."""

  LOSS_KEYS = ()  # No settings beyond the model's logit scale.
  PARAM_BOUNDS = LOGIT_SCALE_BOUNDS

  def __init__(self, model, mesh, loss_config, tokenizer):
    super().__init__(model, mesh, loss_config, tokenizer)
    self.loss = shard.over_batch(clip.clip_loss, mesh, replicated=('logit_scale',))

  def loss_from_embeddings(self, params, extra, embeddings, batch, rng, step):
    del rng, step
    loss, metrics = self.loss(image_emb=embeddings['image_emb'],
                              text_emb=embeddings['text_emb'], image_ids=batch['image_id'],
                              logit_scale=dual_encoder.clamped_logit_scale(params['logit_scale']))
    return loss, metrics, extra

"""Thinking Fast and Slow's distillation: the fast dual encoder learns from the slow model.

L = L_clip + α · mean_i H(p_i, q_i) (`losses/distill.py`), with p_i the frozen
slow model's softmax over B_i of h(x, y_i)/T and q_i the student's softmax of
its logit scale (or 1/τ) times f(x)·g(y_i). The teacher is the latest checkpoint
of the slow workdir `loss.teacher`; its parameters live in the training state's
extra part (checkpointed, never trained) and the student uses its tokenizer.
"""

import jax
import jax.numpy as jnp
from jax import lax

from jaxret import errors
from jaxret.config import workdir as workdir_config
from jaxret.data import pipeline
from jaxret.data import tokenizer as tokenizer_lib
from jaxret.inference import restore as restore_lib
from jaxret.losses import clip
from jaxret.losses import distill
from jaxret.losses import gather
from jaxret.models import capabilities
from jaxret.models import dual_encoder
from jaxret.objectives import base
from jaxret.objectives import clip as clip_objective
from jaxret.parallel import shard


def _teacher(loss_config):
  """(teacher model, teacher config) of the slow workdir `loss.teacher`."""
  if not loss_config.teacher:
    raise errors.UserError('loss.teacher must name a trained slow-model workdir, e.g. '
                           '--config.loss.teacher=/tmp/jaxret-slow (see configs/caption.py)')
  config = workdir_config.load(loss_config.teacher)
  tokenizer = tokenizer_lib.load_workdir(loss_config.teacher, config.data.text_len)
  model = restore_lib.build_model(config, tokenizer)
  capabilities.require(model, capabilities.PairScorer, "the distill loss's teacher (loss.teacher)")
  return model, config


class DistillObjective(base.EmbeddingObjective):
  """CLIP + distillation from a frozen slow model; follows `objectives/base.py`'s protocol,
  with `load_extra` filling in the teacher's parameters in a fresh state. The
  student's stored log logit scale is kept <= log(100), as CLIP's."""

  LOSS_KEYS = ('teacher', 'alpha', 'teacher_temperature', 'student_temperature',
               'num_candidates')
  PARAM_BOUNDS = clip_objective.LOGIT_SCALE_BOUNDS

  def __init__(self, model, mesh, loss_config, tokenizer):
    super().__init__(model, mesh, loss_config, tokenizer)
    self.loss_config = loss_config
    self.teacher_model, self.teacher_config = _teacher(loss_config)
    self.loss = shard.over_batch(self._loss, mesh, replicated=('logit_scale', 'teacher'))

  def init_extra(self, params):
    del params
    example = pipeline.example_batch(self.teacher_config.data, self.teacher_config.data.text_len)
    image = jnp.asarray(example['image'])  # An image, or a clip for a video teacher.
    tokens = jnp.asarray(example['text'])
    shapes = jax.eval_shape(self.teacher_model.init, jax.random.PRNGKey(0), image, tokens, tokens)
    return {'teacher': jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes['params'])}

  def load_extra(self, extra, shardings):
    """The teacher's trained parameters in place of the placeholders of `init_extra`."""
    teacher = restore_lib.restore(self.teacher_config, self.loss_config.teacher).params
    return {**extra, 'teacher': jax.device_put(teacher, shardings['teacher'])}

  def _loss(self, image_emb, text_emb, image_ids, logit_scale, visual, tokens, mask, candidates,
            teacher, *, axis_name):
    contrastive, metrics = clip.clip_loss(image_emb, text_emb, image_ids, logit_scale,
                                          axis_name=axis_name)
    rows, valid = candidates
    all_visual = gather.all_gather_no_grad(visual, axis_name)
    all_images = gather.all_gather(image_emb, axis_name)
    count = rows.shape[1]
    teacher_scores = self.teacher_model.apply(
        {'params': teacher}, all_visual, jnp.repeat(tokens, count, axis=0),
        jnp.repeat(mask, count, axis=0), rows.reshape(-1),
        method=self.teacher_model.score).reshape(rows.shape)
    scale = (1.0 / self.loss_config.student_temperature if self.loss_config.student_temperature
             else logit_scale)
    student = scale * jnp.einsum('nd,ncd->nc', text_emb, all_images[rows])
    kd, kd_metrics = distill.distillation_loss(
        lax.stop_gradient(teacher_scores), student, valid,
        teacher_temperature=self.loss_config.teacher_temperature, axis_name=axis_name)
    metrics.update(kd_metrics, **{'distill/loss': kd, 'clip/loss': contrastive})
    return contrastive + self.loss_config.alpha * kd, metrics

  def embed(self, params, batch):
    outputs = self.forward(params, batch)
    return {'image_emb': outputs['image_emb'], 'text_emb': outputs['text_emb']}

  def loss_from_embeddings(self, params, extra, embeddings, batch, rng, step):
    """The teacher's scores and the candidates are computed on the global batch (so
    gradient caching draws the same candidates as one pass)."""
    del step
    logit_scale = dual_encoder.clamped_logit_scale(params['logit_scale'])
    teacher = lax.stop_gradient(extra['teacher'])
    visual = self.teacher_model.apply({'params': teacher}, batch['image'],
                                      method=self.teacher_model.visual_tokens)
    candidates = distill.sample_candidates(rng, batch['image_id'],
                                           self.loss_config.num_candidates)
    loss, metrics = self.loss(image_emb=embeddings['image_emb'],
                              text_emb=embeddings['text_emb'], image_ids=batch['image_id'],
                              logit_scale=logit_scale,
                              visual=lax.stop_gradient(visual), tokens=batch['text'],
                              mask=batch['text_mask'], candidates=candidates, teacher=teacher)
    return loss, metrics, extra


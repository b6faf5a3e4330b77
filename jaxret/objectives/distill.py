"""Thinking Fast and Slow's distillation: the fast dual encoder learns from the slow model.

L = L_clip + α · mean_i H(p_i, q_i) (`losses/distill.py`), with p_i the frozen
slow model's softmax over B_i of h(x, y_i)/T and q_i the student's softmax of
its logit scale (or 1/τ) times f(x)·g(y_i), both over all of B_i or over its
images other than the caption's (`loss.targets`). The teacher is the latest checkpoint
of the slow workdir `loss.teacher`; its parameters live in the training state's
extra part (checkpointed, never trained) and the student uses its tokenizer.
"""

import os

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
  """(teacher model, teacher config, teacher tokenizer) of the slow workdir `loss.teacher`."""
  if not loss_config.teacher:
    raise errors.UserError('loss.teacher must name a trained slow-model workdir, e.g. '
                           '--config.loss.teacher=/tmp/jaxret-slow (see configs/caption.py)')
  if not os.path.exists(os.path.join(loss_config.teacher, workdir_config.FILENAME)):
    raise errors.UserError(f'loss.teacher {loss_config.teacher} is not a trained slow-model '
                           'workdir (no config.json); train it with configs/caption.py first')
  config = workdir_config.load(loss_config.teacher)
  tokenizer = tokenizer_lib.load_workdir(loss_config.teacher, config.data.text_len)
  model = restore_lib.build_model(config, tokenizer)
  capabilities.require(model, capabilities.PairScorer, "the distill loss's teacher (loss.teacher)")
  return model, config, tokenizer


# How B_i's other images are chosen from the global batch (`loss.candidates`).
CANDIDATES = ('random', 'student', 'teacher')


def _check_tokenizer(teacher_dir, teacher_tokenizer, tokenizer):
  """Refuses a student whose tokenizer is not the teacher's (the teacher reads its tokens)."""
  if teacher_tokenizer.backend.get_vocab() != tokenizer.backend.get_vocab():
    raise errors.UserError(
        f"this model's tokenizer is not the teacher's ({teacher_dir}); set "
        f'--config.tokenizer.path={teacher_dir}')


def _check_batch(teacher_dir, teacher_data, batch):
  """Refuses batches the teacher cannot read: other image sizes, longer captions."""
  size, length = batch['image'].shape[-3], batch['text'].shape[1]  # Images or clips.
  if size != teacher_data.image_size:
    raise errors.UserError(
        f'the teacher {teacher_dir} reads {teacher_data.image_size}px images but this model '
        f'{size}px; train both with the same data.image_size')
  if length > teacher_data.text_len:
    raise errors.UserError(
        f'the teacher {teacher_dir} reads captions of up to {teacher_data.text_len} tokens '
        f'but this model {length}; set data.text_len <= {teacher_data.text_len}')


class DistillObjective(base.EmbeddingObjective):
  """CLIP + distillation from a frozen slow model; follows `objectives/base.py`'s protocol,
  with `load_extra` filling in the teacher's parameters in a fresh state. The
  student's stored log logit scale is kept <= log(100), as CLIP's."""

  LOSS_KEYS = ('teacher', 'alpha', 'teacher_temperature', 'student_temperature',
               'num_candidates', 'candidates', 'targets')
  PARAM_BOUNDS = clip_objective.LOGIT_SCALE_BOUNDS

  def __init__(self, model, mesh, loss_config, tokenizer):
    super().__init__(model, mesh, loss_config, tokenizer)
    self.loss_config = loss_config
    if loss_config.candidates not in CANDIDATES:
      raise errors.UserError(f'unknown loss.candidates {loss_config.candidates!r}; '
                             f'known: {", ".join(CANDIDATES)}')
    if loss_config.targets not in distill.TARGETS:
      raise errors.UserError(f'unknown loss.targets {loss_config.targets!r}; '
                             f'known: {", ".join(distill.TARGETS)}')
    self.teacher_model, self.teacher_config, self.teacher_tokenizer = _teacher(loss_config)
    _check_tokenizer(loss_config.teacher, self.teacher_tokenizer, tokenizer)
    self.loss = shard.over_batch(self._loss, mesh, replicated=('logit_scale', 'teacher'))

  def init_params(self, rng, batch):
    _check_batch(self.loss_config.teacher, self.teacher_config.data, batch)
    return super().init_params(rng, batch)

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
        teacher_temperature=self.loss_config.teacher_temperature,
        targets=self.loss_config.targets, axis_name=axis_name)
    metrics.update(kd_metrics, **{'distill/loss': kd, 'clip/loss': contrastive})
    return contrastive + self.loss_config.alpha * kd, metrics

  def _candidate_scores(self, rng, embeddings, teacher, visual, batch):
    """(B, B) scores that choose B_i (`loss.candidates`) over the global batch: random,
    or the frozen student's or teacher's score of caption i against image j."""
    size = batch['image_id'].shape[0]
    if self.loss_config.candidates == 'random':
      return jax.random.uniform(rng, (size, size))
    if self.loss_config.candidates == 'student':
      return lax.stop_gradient(embeddings['text_emb'] @ embeddings['image_emb'].T)
    # 'teacher': h of every (caption, image) pair of the global batch, B² decoder passes;
    # each image's cross-attention keys and values are projected once (visual_index).
    scores = self.teacher_model.apply(
        {'params': teacher}, visual, jnp.repeat(batch['text'], size, axis=0),
        jnp.repeat(batch['text_mask'], size, axis=0), jnp.tile(jnp.arange(size), size),
        method=self.teacher_model.score)
    return scores.reshape(size, size)

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
    candidates = distill.pick_candidates(
        self._candidate_scores(rng, embeddings, teacher, lax.stop_gradient(visual), batch),
        batch['image_id'], self.loss_config.num_candidates)
    loss, metrics = self.loss(image_emb=embeddings['image_emb'],
                              text_emb=embeddings['text_emb'], image_ids=batch['image_id'],
                              logit_scale=logit_scale,
                              visual=lax.stop_gradient(visual), tokens=batch['text'],
                              mask=batch['text_mask'], candidates=candidates, teacher=teacher)
    return loss, metrics, extra


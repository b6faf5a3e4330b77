"""Distilling a slow scorer into a fast dual encoder (Miech et al. 2021, Sec. 3.3)."""

import jax
import jax.numpy as jnp

from jaxret.losses import gather
from jaxret.losses import logits as logits_lib


# Over which images of B_i p and q are compared (`loss.targets`): 'all' of B_i, the
# paper's; or its 'negatives' only, the other images, as decoupled knowledge
# distillation's non-target term (Zhao et al. 2022): the teacher's ranking of the
# images that are not the caption's, which a confident teacher's p over all of B_i
# weights by 1 − p(own) ≈ 0.
TARGETS = ('all', 'negatives')


def distillation_loss(teacher_scores, student_logits, valid, *, teacher_temperature=1.0,
                      targets='all', axis_name=None):
  """mean_i H(p_i, q_i) over the global batch of captions.

  For caption y_i and its candidate images B_i (column 0: its own image x_i; the
  others: other images of the batch), p_i = softmax_j(h(x_j, y_i) / T) is the
  frozen teacher's distribution and q_i = softmax_j(student logits) the
  student's; H(p, q) = −Σ_j p_j log q_j. Invalid candidates (`valid` False: a
  batch too small to fill B_i) take part in neither softmax. `targets='negatives'`
  takes both softmaxes over B_i without x_i (column 0).

  Args:
    teacher_scores, student_logits, valid: (n, C) for this device's captions.
    teacher_temperature: T.
    targets: one of `TARGETS`.
  Returns:
    (loss, metrics), replicated; the metrics compare the two over all of B_i.
  """
  if targets not in TARGETS:
    raise ValueError(f'unknown distillation targets {targets!r}; known: {", ".join(TARGETS)}')
  teacher = logits_lib.masked_logits(
      teacher_scores.astype(jnp.float32) / teacher_temperature, valid)
  student = logits_lib.masked_logits(student_logits.astype(jnp.float32), valid)
  compared = jnp.asarray(valid).at[:, 0].set(False) if targets == 'negatives' else valid
  p = jax.lax.stop_gradient(jax.nn.softmax(
      logits_lib.masked_logits(teacher, compared), axis=-1))
  log_q = jax.nn.log_softmax(logits_lib.masked_logits(student, compared), axis=-1)
  cross_entropy = -jnp.sum(jnp.where(compared, p * log_q, 0.0))
  agree = jnp.sum(logits_lib.top1_matches(student, jnp.argmax(teacher, -1)))
  teacher_top1 = jnp.sum(logits_lib.top1_matches(teacher, 0))  # Column 0: the caption's image.
  count = gather.psum(jnp.float32(teacher_scores.shape[0]), axis_name)
  total, agree, teacher_top1 = gather.psum((cross_entropy, agree, teacher_top1), axis_name)
  return total / count, {'distill/teacher_student_agree': agree / count,
                         'distill/teacher_top1': teacher_top1 / count}


def pick_candidates(scores, image_ids, num_candidates):
  """B_i for every caption of the global batch: (B, C) row indices and validity.

  Column 0 is the caption's own row; the others are the `num_candidates` − 1 rows
  with the highest `scores[i, j]` among those whose image id differs from the
  caption's (`num_candidates` 0: all of them, the whole global batch). With
  random scores these are random images; with the student's or the teacher's
  scores, the images it confuses most with the caption's own (hard candidates).

  Args:
    scores: (B, B) float, caption i (row) against image j (column).
    image_ids: (B,) image ids.
  """
  size = image_ids.shape[0]
  other = image_ids[:, None] != image_ids[None, :]
  scores = jnp.where(other, scores.astype(jnp.float32), -jnp.inf)
  others = size - 1 if num_candidates == 0 else min(num_candidates - 1, size - 1)
  picked_scores, picked = jax.lax.top_k(scores, others)
  rows = jnp.concatenate([jnp.arange(size)[:, None], picked], axis=1)
  valid = jnp.concatenate([jnp.ones((size, 1), bool), picked_scores > -jnp.inf], axis=1)
  return rows, valid


def sample_candidates(rng, image_ids, num_candidates):
  """`pick_candidates` by random scores: distinct random other images. Drawn for the
  global batch from one key, so every device (and every device count) gets the
  same candidates."""
  size = image_ids.shape[0]
  return pick_candidates(jax.random.uniform(rng, (size, size)), image_ids, num_candidates)

"""What the distillation study's numbers rest on: what the teacher's soft targets say
beyond the contrastive one-hot, and where Fast's top-1 errors fall."""

import jax
import numpy as np

from jaxret.config import workdir as workdir_config
from jaxret.data import pipeline
from jaxret.data import sources
from jaxret.evaluate import embed
from jaxret.evaluate import recall
from jaxret.evaluate import retrieval
from jaxret.inference import restore as restore_lib
from jaxret.losses import distill as distill_loss
from jaxret.models import dual_encoder
from jaxret.rerank import scorer as scorer_lib


def first_batches(slow, fast, group_batches, batches):
  """(batch, h, student scores) of the first `batches` training batches (seed 0): the
  teacher's h and the Fast model's f(x)·g(y) of every caption (row) against every image
  (column) of the batch, and Fast's logit scale."""
  slow_config, fast_config = workdir_config.load(slow), workdir_config.load(fast)
  teacher, student = restore_lib.restore(slow_config, slow), restore_lib.restore(fast_config, fast)
  data_config = fast_config.data  # Restored already: the change below touches data only.
  with data_config.unlocked():
    data_config.group_batches = group_batches
  records = sources.load_split(data_config, 'train')
  # The same batches (seed 0) twice: the captions in each model's own tokens (a teacher
  # trained on other images orders its vocabulary differently).
  dataset, student_dataset = (
      pipeline.train_dataset(records, model.tokenizer, data_config, seed=0,
                             global_batch=fast_config.batch_size)
      for model in (teacher, student))
  scorer = scorer_lib.SlowScorer(teacher.model, teacher.params, slow_config.data)
  visual_tokens = jax.jit(lambda p, x: teacher.model.apply(
      {'params': p}, x, method=teacher.model.visual_tokens))
  image_emb = jax.jit(lambda p, x: student.model.apply(
      {'params': p}, x, method=student.model.encode_image)[0])
  text_emb = jax.jit(lambda p, t, m: student.model.apply(
      {'params': p}, t, m, method=student.model.encode_text)[0])
  scale = float(dual_encoder.clamped_logit_scale(student.params['logit_scale']))
  for step in range(batches):
    batch, student_batch = dataset[step], student_dataset[step]
    np.testing.assert_array_equal(batch['image_id'], student_batch['image_id'])
    h = scorer.score_gallery(batch['text'], batch['text_mask'],
                             np.asarray(visual_tokens(teacher.params, batch['image'])))
    student_scores = (np.asarray(text_emb(student.params, student_batch['text'],
                                          student_batch['text_mask']))
                      @ np.asarray(image_emb(student.params, batch['image'])).T)
    yield batch, h, scale * student_scores


def _softmax(logits):
  p = np.exp(logits - logits.max(axis=1, keepdims=True))
  return p / p.sum(axis=1, keepdims=True)


def _entropy(p):
  return -np.sum(np.where(p > 0, p * np.log(np.maximum(p, 1e-30)), 0.0), axis=1)


def _candidate_kinds(step, h, student_scores, image_ids, num_candidates):
  """{'random' | 'student': B_i's (h, student logits) of `num_candidates` images, the
  caption's own first}: B_i drawn at random, or the Fast model's hardest."""
  random_scores = np.random.default_rng(step).uniform(size=h.shape)
  kinds = {}
  for name, scores in (('random', random_scores), ('student', student_scores)):
    rows, valid = (np.asarray(a) for a in distill_loss.pick_candidates(
        scores, image_ids, num_candidates))
    assert valid.all(), 'a training batch holds more than |B_i| images'
    kinds[name] = (np.take_along_axis(h, rows, axis=1),
                   np.take_along_axis(student_scores, rows, axis=1))
  return kinds


def teacher_targets(slow, fast, group_batches, temperatures, num_candidates=8, batches=4):
  """What the teacher's soft targets say beyond the contrastive one-hot, on the first
  `batches` training batches (seed 0): for B_i of `num_candidates` images chosen at
  random or by the Fast model's score (`student`), and each teacher temperature T, the
  fraction of captions whose own image the teacher ranks first in B_i, the teacher's
  mean probability of it, and the mean entropy of p over B_i (nats; log |B_i| is
  uniform)."""
  stats = {}
  for step, (batch, h, student_scores) in enumerate(
      first_batches(slow, fast, group_batches, batches)):
    kinds = _candidate_kinds(step, h, student_scores, batch['image_id'], num_candidates)
    for name, (picked, _) in kinds.items():
      for t in temperatures:
        p = _softmax(picked / t)
        row = stats.setdefault(f'{name}/T={t:g}', {'top1': [], 'p_own': [], 'entropy': []})
        row['top1'].append(float(np.mean(np.argmax(picked, axis=1) == 0)))
        row['p_own'].append(float(np.mean(p[:, 0])))
        row['entropy'].append(float(np.mean(_entropy(p))))
  return {'batches': batches, 'batch_size': len(batch['image_id']),
          'num_candidates': num_candidates, 'group_batches': group_batches,
          'rows': {key: {m: float(np.mean(v)) for m, v in row.items()}
                   for key, row in stats.items()}}


def teacher_negatives(slow, fast, temperatures, num_candidates=8, batches=4):
  """What `loss.targets=negatives` teaches: over B_i's images other than the caption's,
  on the first `batches` training batches (seed 0), the fraction of captions whose
  top negative is the same for the teacher and the trained Fast model, their mean
  Spearman rank correlation over the negatives, H(p, q) with p the teacher's softmax
  at each T and q Fast's (at its own logit scale), and the entropy of p (nats; uniform:
  log(|B_i| − 1))."""
  stats = {}
  for step, (batch, h, student_scores) in enumerate(
      first_batches(slow, fast, False, batches)):
    kinds = _candidate_kinds(step, h, student_scores, batch['image_id'], num_candidates)
    for name, (picked, student) in kinds.items():
      teacher_neg, student_neg = picked[:, 1:], student[:, 1:]
      log_q = np.log(_softmax(student_neg))
      for t in temperatures:
        p = _softmax(teacher_neg / t)
        row = stats.setdefault(f'{name}/T={t:g}', {'top_agree': [], 'spearman': [],
                                                    'cross_entropy': [], 'entropy': []})
        row['top_agree'].append(float(np.mean(
            np.argmax(teacher_neg, axis=1) == np.argmax(student_neg, axis=1))))
        row['spearman'].append(float(np.mean(_spearman(teacher_neg, student_neg))))
        row['cross_entropy'].append(float(np.mean(-np.sum(p * log_q, axis=1))))
        row['entropy'].append(float(np.mean(_entropy(p))))
  return {'batches': batches, 'num_candidates': num_candidates, 'fast': fast,
          'rows': {key: {m: float(np.mean(v)) for m, v in row.items()}
                   for key, row in stats.items()}}


def _spearman(a, b):
  """Per row: Spearman's rank correlation of a and b (no ties in float scores)."""
  ranks_a = np.argsort(np.argsort(a, axis=1), axis=1).astype(np.float64)
  ranks_b = np.argsort(np.argsort(b, axis=1), axis=1).astype(np.float64)
  ranks_a -= ranks_a.mean(axis=1, keepdims=True)
  ranks_b -= ranks_b.mean(axis=1, keepdims=True)
  return (ranks_a * ranks_b).sum(axis=1) / np.sqrt(
      (ranks_a ** 2).sum(axis=1) * (ranks_b ** 2).sum(axis=1))


def top1_errors(workdir):
  """Where a dual encoder's text→image top 1 falls over all test captions: R@1, the
  fraction of captions whose top image is in their image's group of near-duplicates
  (itself included), and the share of the wrong top-1 images that are one of its
  near-duplicates (the fine distinctions) rather than another scene."""
  config = workdir_config.load(workdir)
  restored = restore_lib.restore(config, workdir)
  records = sources.load_split(config.data, 'test')
  embedder = embed.Embedder(restored.model, restored.mesh, config.eval.batch_size, config.data)
  image_emb, text_emb, text_image_ids, texts = retrieval.embed_split(
      embedder, restored.params, records, restored.tokenizer)
  right = recall.rows_of(records.image_ids, text_image_ids)
  top = np.argmax(text_emb @ image_emb.T, axis=1)
  groups = np.asarray(records.groups)
  hit, in_group = top == right, groups[top] == groups[right]
  return {'captions': len(texts), 't2i/R@1': float(hit.mean()),
          'group@1': float(in_group.mean()),
          'errors_in_group': float((in_group & ~hit).sum() / max((~hit).sum(), 1))}

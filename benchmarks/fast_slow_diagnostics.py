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
from jaxret.rerank import scorer as scorer_lib


def teacher_targets(slow, fast, group_batches, temperatures, num_candidates=8, batches=4):
  """What the teacher's soft targets say beyond the contrastive one-hot, on the first
  `batches` training batches (seed 0): for B_i of `num_candidates` images chosen at
  random or by the Fast model's score (`student`), and each teacher temperature T, the
  fraction of captions whose own image the teacher ranks first in B_i, the teacher's
  mean probability of it, and the mean entropy of p over B_i (nats; log |B_i| is
  uniform)."""
  slow_config, fast_config = workdir_config.load(slow), workdir_config.load(fast)
  teacher, student = restore_lib.restore(slow_config, slow), restore_lib.restore(fast_config, fast)
  data_config = fast_config.data  # Restored already: the change below touches data only.
  with data_config.unlocked():
    data_config.group_batches = group_batches
  dataset = pipeline.train_dataset(sources.load_split(data_config, 'train'),
                                   teacher.tokenizer, data_config, seed=0,
                                   global_batch=fast_config.batch_size)
  scorer = scorer_lib.SlowScorer(teacher.model, teacher.params, slow_config.data)
  visual_tokens = jax.jit(lambda p, x: teacher.model.apply(
      {'params': p}, x, method=teacher.model.visual_tokens))
  image_emb = jax.jit(lambda p, x: student.model.apply(
      {'params': p}, x, method=student.model.encode_image)[0])
  text_emb = jax.jit(lambda p, t, m: student.model.apply(
      {'params': p}, t, m, method=student.model.encode_text)[0])
  stats = {}
  for step in range(batches):
    batch = dataset[step]
    h = scorer.score_gallery(batch['text'], batch['text_mask'],
                             np.asarray(visual_tokens(teacher.params, batch['image'])))
    student_scores = (np.asarray(text_emb(student.params, batch['text'], batch['text_mask']))
                      @ np.asarray(image_emb(student.params, batch['image'])).T)
    random_scores = np.random.default_rng(step).uniform(size=h.shape)
    for name, scores in (('random', random_scores), ('student', student_scores)):
      rows, valid = (np.asarray(a) for a in distill_loss.pick_candidates(
          scores, batch['image_id'], num_candidates))
      picked = np.where(valid, np.take_along_axis(h, rows, axis=1), -np.inf)
      for t in temperatures:
        logits = picked / t
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        entropy = -np.sum(np.where(p > 0, p * np.log(np.maximum(p, 1e-30)), 0.0), axis=1)
        row = stats.setdefault(f'{name}/T={t:g}', {'top1': [], 'p_own': [], 'entropy': []})
        row['top1'].append(float(np.mean(np.argmax(picked, axis=1) == 0)))
        row['p_own'].append(float(np.mean(p[:, 0])))
        row['entropy'].append(float(np.mean(entropy)))
  return {'batches': batches, 'batch_size': fast_config.batch_size,
          'num_candidates': num_candidates, 'group_batches': group_batches,
          'rows': {key: {m: float(np.mean(v)) for m, v in row.items()}
                   for key, row in stats.items()}}


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

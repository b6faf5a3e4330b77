"""Thinking Fast and Slow: the slow model's score, its distillation loss, re-ranking."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxret.losses import caption
from jaxret.losses import distill
from jaxret.models import slow
from jaxret.rerank import buckets
from jaxret.rerank import reranker as reranker_lib
from jaxret.rerank import scorer as scorer_lib

VOCAB, LENGTH = 30, 10


@pytest.fixture(scope='module')
def tiny():
  model = slow.SlowCaptioner(vocab_size=VOCAB, text_len=LENGTH, image={'variant': 'mu/8'},
                             decoder={'variant': 'mu', 'depth': 1}, pyramid='fine')
  rng = np.random.default_rng(0)
  images = rng.normal(size=(3, 32, 32, 3)).astype(np.float32)
  tokens = np.array([[2, 7, 9, 11, 3, 0, 0, 0, 0, 0],
                     [2, 5, 3, 0, 0, 0, 0, 0, 0, 0],
                     [2, 6, 8, 10, 12, 14, 16, 18, 3, 0]], np.int32)
  mask = (tokens > 0).astype(np.int32)
  params = model.init(jax.random.key(0), images, tokens, mask)['params']
  return model, params, images, tokens, mask


def _numpy_log_likelihood(logits, tokens, mask):
  """Σ over real next tokens of log softmax, in float64, row by row."""
  logits = np.float64(logits)
  totals = []
  for row_logits, row_tokens, row_mask in zip(logits, tokens, mask):
    length = int(row_mask.sum())
    total = 0.0
    for t in range(length - 1):  # Position t predicts token t + 1.
      z = row_logits[t] - row_logits[t].max()
      total += z[row_tokens[t + 1]] - np.log(np.exp(z).sum())
    totals.append(total)
  return np.array(totals)


def test_h_is_the_sum_of_both_decoders_log_likelihoods(tiny):
  model, params, images, tokens, mask = tiny
  visual = model.apply({'params': params}, images, method=model.visual_tokens)
  reversed_by_hand = tokens.copy()
  for row, length in enumerate(mask.sum(1)):
    reversed_by_hand[row, 1:length - 1] = tokens[row, 1:length - 1][::-1]
  forward_logits = model.apply({'params': params}, visual, tokens, mask,
                               method=model.next_token_logits)
  backward_logits = model.apply({'params': params}, visual, reversed_by_hand, mask, True,
                                method=model.next_token_logits)
  expected = (_numpy_log_likelihood(forward_logits, tokens, mask)
              + _numpy_log_likelihood(backward_logits, reversed_by_hand, mask))
  h = model.apply({'params': params}, visual, tokens, mask, method=model.score)
  np.testing.assert_allclose(h, expected, rtol=1e-5, atol=1e-4)
  out, _ = model.apply({'params': params}, images, tokens, mask)
  np.testing.assert_allclose(out['log_p_forward'] + out['log_p_backward'], expected,
                             rtol=1e-5, atol=1e-4)
  # From the stored cross-attention keys and values instead of the visual tokens: the same h.
  keys_values = model.apply({'params': params}, visual, method=model.keys_values)
  np.testing.assert_allclose(
      model.apply({'params': params}, keys_values, tokens, mask, method=model.score_keys_values),
      h, rtol=1e-5, atol=1e-4)
  # Indexed pairs (each image's keys and values projected once) score the same pairs.
  index = np.array([2, 0, 1, 1, 2])
  pair_tokens, pair_mask = tokens[[0, 1, 2, 0, 1]], mask[[0, 1, 2, 0, 1]]
  indexed = model.apply({'params': params}, visual, pair_tokens, pair_mask, index,
                        method=model.score)
  gathered = model.apply({'params': params}, visual[index], pair_tokens, pair_mask,
                         method=model.score)
  np.testing.assert_allclose(indexed, gathered, rtol=1e-5, atol=1e-4)


def test_backward_decoder_reads_the_reversed_caption():
  tokens = jnp.array([[2, 7, 9, 11, 3, 0], [2, 5, 3, 0, 0, 0], [2, 3, 0, 0, 0, 0]])
  reversed_tokens = caption.reverse_captions(tokens, (tokens > 0).astype(jnp.int32))
  assert reversed_tokens.tolist() == [[2, 11, 9, 7, 3, 0], [2, 5, 3, 0, 0, 0],
                                      [2, 3, 0, 0, 0, 0]]


def test_padding_does_not_change_h(tiny):
  model, params, images, tokens, mask = tiny
  visual = model.apply({'params': params}, images, method=model.visual_tokens)
  junk = np.where(mask > 0, tokens, 17)  # Garbage where the mask is 0.
  h = model.apply({'params': params}, visual, tokens, mask, method=model.score)
  h_junk = model.apply({'params': params}, visual, junk, mask, method=model.score)
  np.testing.assert_allclose(h, h_junk, atol=1e-5)


def _numpy_distillation(teacher, student, valid, temperature):
  total = 0.0
  for t_row, s_row, v_row in zip(np.float64(teacher), np.float64(student), valid):
    if not v_row.any():  # Nothing to compare: the row adds nothing (but counts).
      continue
    t, s = t_row[v_row] / temperature, s_row[v_row]
    p = np.exp(t - t.max()) / np.exp(t - t.max()).sum()
    log_q = s - s.max() - np.log(np.exp(s - s.max()).sum())
    total += -(p * log_q).sum()
  return total / len(teacher)


@pytest.mark.parametrize('targets', distill.TARGETS)
def test_distillation_loss_against_numpy(targets):
  rng = np.random.default_rng(1)
  teacher = rng.normal(scale=5, size=(6, 5)).astype(np.float32)
  student = rng.normal(scale=3, size=(6, 5)).astype(np.float32)
  valid = np.ones((6, 5), bool)
  valid[2, 3:] = False  # A caption with fewer candidates.
  valid[4, 1:] = False  # One with none but its own image: nothing to compare over negatives.
  loss, metrics = distill.distillation_loss(teacher, student, valid, teacher_temperature=2.0,
                                            targets=targets)
  # 'negatives': both softmaxes over the other images only (column 0 left out).
  compared = valid.copy()
  if targets == 'negatives':
    compared[:, 0] = False
  np.testing.assert_allclose(loss, _numpy_distillation(teacher, student, compared, 2.0),
                             rtol=1e-5)
  # The student's best candidate is the teacher's (over valid entries), and the teacher's
  # is column 0 (the caption's own image), per row.
  teacher_best = np.argmax(np.where(valid, teacher, -np.inf), axis=1)
  student_best = np.argmax(np.where(valid, student, -np.inf), axis=1)
  np.testing.assert_allclose(metrics['distill/teacher_student_agree'],
                             np.mean(student_best == teacher_best), rtol=1e-6)
  np.testing.assert_allclose(metrics['distill/teacher_top1'], np.mean(teacher_best == 0),
                             rtol=1e-6)
  # Only the student receives gradient, and it is p - q per row (over valid entries).
  grad = jax.grad(lambda s: distill.distillation_loss(teacher, s, valid,
                                                      targets=targets)[0])(student)
  assert np.all(np.isfinite(grad)) and np.all(grad[~compared] == 0)
  np.testing.assert_allclose(grad.sum(axis=1), 0, atol=1e-6)


def test_candidates_are_self_then_other_images():
  ids = jnp.array([0, 1, 1, 2, 3, 4, 5, 6])
  rows, valid = distill.sample_candidates(jax.random.key(3), ids, 4)
  assert rows.shape == (8, 4) and bool(valid.all())
  np.testing.assert_array_equal(rows[:, 0], np.arange(8))
  for i, row in enumerate(np.asarray(rows)):
    assert len(set(row.tolist())) == 4
    assert all(ids[j] != ids[i] for j in row[1:])
  rows_again, _ = distill.sample_candidates(jax.random.key(3), ids, 4)
  np.testing.assert_array_equal(rows, rows_again)
  # Too few other images: the missing candidates are marked invalid.
  _, valid = distill.sample_candidates(jax.random.key(0), jnp.array([0, 0, 1]), 3)
  assert np.asarray(valid).tolist() == [[True, True, False], [True, True, False],
                                        [True, True, True]]


def test_hard_candidates_are_the_highest_scored_other_images():
  """B_i by a score matrix: own row first, then the other images by score, best first,
  never a row of the caption's own image; 0 candidates: the whole batch."""
  rng = np.random.default_rng(4)
  ids = np.array([0, 1, 1, 2, 3, 4])
  scores = rng.normal(size=(6, 6)).astype(np.float32)
  rows, valid = distill.pick_candidates(jnp.asarray(scores), jnp.asarray(ids), 3)
  for i in range(6):
    others = [j for j in np.argsort(-scores[i], kind='stable') if ids[j] != ids[i]]
    assert np.asarray(rows[i]).tolist() == [i] + others[:2]
  assert bool(valid.all())
  rows, valid = distill.pick_candidates(jnp.asarray(scores), jnp.asarray(ids), 0)
  assert rows.shape == (6, 6)
  for i in range(6):  # Every other image once; the caption's own image's other row is invalid.
    others = {j for j in range(6) if ids[j] != ids[i]}
    assert set(np.asarray(rows[i])[np.asarray(valid[i])][1:].tolist()) == others
    assert int(valid[i].sum()) == 1 + len(others)


def _scorer(tiny, **kwargs):
  model, params, *_ = tiny
  data = ml_collections.ConfigDict({'image_mean': (0.5,) * 3, 'image_std': (0.5,) * 3})
  return scorer_lib.SlowScorer(model, params, data, length_buckets=(8, 10), **kwargs)


def test_scorer_compiles_once_per_bucket(tiny):
  model, params, images, tokens, mask = tiny
  scorer = _scorer(tiny, candidate_buckets=(4,), query_buckets=(1,))
  uint8 = np.random.default_rng(0).integers(0, 255, size=(5, 32, 32, 3), dtype=np.uint8)
  visual = scorer.visual_tokens(uint8)
  for row in (0, 1):  # Two captions of different lengths, both in the length-8 bucket.
    for count in (3, 4):  # 3 candidates are padded to the bucket of 4.
      scores = scorer.score(tokens[row:row + 1], mask[row:row + 1], visual[None, :count])
      expected = model.apply({'params': params}, jnp.asarray(visual[:count], jnp.float32),
                             np.repeat(tokens[row:row + 1], count, 0),
                             np.repeat(mask[row:row + 1], count, 0), method=model.score)
      np.testing.assert_allclose(scores[0], expected, rtol=1e-5, atol=1e-4)
  assert scorer.compilations == 1
  scorer.score(tokens[2:3], mask[2:3], visual[None, :4])  # A longer caption: bucket 10.
  assert scorer.compilations == 2


def test_scorer_over_stored_keys_and_values_scores_as_over_visual_tokens(tiny):
  """rerank.features=keys_values: per image the decoders' cross-attention keys and values
  (more bytes than the tokens), and the same h from them."""
  _, _, _, tokens, mask = tiny
  uint8 = np.random.default_rng(2).integers(0, 255, size=(4, 32, 32, 3), dtype=np.uint8)
  by_tokens = _scorer(tiny, candidate_buckets=(4,), query_buckets=(1,))
  by_kv = _scorer(tiny, candidate_buckets=(4,), query_buckets=(1,), features='keys_values')
  visual, keys_values = by_tokens.gallery_features(uint8), by_kv.gallery_features(uint8)
  # (2 decoders, depth 1, keys and values, tokens, heads, head width) per image.
  assert keys_values.shape[1:4] == (2, 1, 2) and keys_values.shape[4] == visual.shape[1]
  assert keys_values[0].nbytes == 4 * visual[0].nbytes  # mu: 2 decoders x 1 block x K, V.
  np.testing.assert_allclose(by_kv.score(tokens[:1], mask[:1], keys_values[None]),
                             by_tokens.score(tokens[:1], mask[:1], visual[None]),
                             rtol=1e-5, atol=1e-4)


def test_timed_loops_warm_every_length_bucket_first(tiny):
  """A query scored alone runs its caption-length bucket's program: the fast_slow
  evaluator and the service score one probe per bucket before a clock starts, so a loop
  over any captions compiles nothing (warming the first query alone did not)."""
  _, _, _, tokens, mask = tiny  # 5, 3 and 9 tokens: buckets 8, 8 and 10.
  uint8 = np.random.default_rng(4).integers(0, 255, size=(4, 32, 32, 3), dtype=np.uint8)
  scorer = _scorer(tiny, candidate_buckets=(4,), query_buckets=(1,))
  gallery = scorer.gallery_features(uint8)
  probes = buckets.length_probes(tokens, mask, scorer.length_buckets)
  assert [int(probe_mask.sum()) for _, probe_mask in probes] == [8, 10]
  scorer.score(tokens[:1], mask[:1], gallery[None])
  assert scorer.compilations == 1
  for probe in probes:
    scorer.score(*probe, gallery[None])
  assert scorer.compilations == 2  # The first query alone had left bucket 10 to the loop.
  for i in range(len(tokens)):
    scorer.score(tokens[i:i + 1], mask[i:i + 1], gallery[None])
  assert scorer.compilations == 2


@pytest.mark.parametrize('features', scorer_lib.FEATURES)
def test_exhaustive_gallery_scoring_equals_scoring_each_query_alone(tiny, features):
  """score_gallery (query batches x gallery chunks, keys and values projected once per
  item and call) gives every query's h over the whole gallery; 3 queries in batches of 2
  and 7 items in chunks of 3 leave remainders on both sides."""
  _, _, _, tokens, mask = tiny
  uint8 = np.random.default_rng(3).integers(0, 255, size=(7, 32, 32, 3), dtype=np.uint8)
  scorer = _scorer(tiny, candidate_buckets=(7,), query_buckets=(1,), features=features)
  gallery = scorer.gallery_features(uint8)
  grid = scorer.score_gallery(tokens, mask, gallery, query_batch=2, gallery_chunk=3)
  alone = np.concatenate([scorer.score(tokens[i:i + 1], mask[i:i + 1], gallery[None])
                          for i in range(3)])
  assert grid.shape == (3, 7)
  np.testing.assert_allclose(grid, alone, rtol=1e-5, atol=1e-4)


def test_rerank_orders_by_h_alone_with_beta_0_and_by_fast_alone_with_huge_beta(tiny):
  _, _, _, tokens, mask = tiny
  scorer = _scorer(tiny, candidate_buckets=(5,), query_buckets=(1,))
  uint8 = np.random.default_rng(0).integers(0, 255, size=(5, 32, 32, 3), dtype=np.uint8)
  visual = scorer.visual_tokens(uint8)
  ids = np.array(['a', 'b', 'c', 'd', 'e'])
  fast = np.array([[0.9, 0.7, 0.5, 0.3, 0.1]], np.float32)
  candidates = [['e', 'c', 'a', 'd', 'b']]
  by_h = reranker_lib.FastSlowReranker(scorer, None, ids, visual, num_candidates=5, beta=0.0)
  final, slow_scores = by_h.rerank(tokens[:1], mask[:1], candidates, fast)
  np.testing.assert_array_equal(final, slow_scores)
  np.testing.assert_array_equal(np.argsort(-final[0]), np.argsort(-slow_scores[0]))
  by_fast = reranker_lib.FastSlowReranker(scorer, None, ids, visual, num_candidates=5,
                                          beta=1e9)
  final, _ = by_fast.rerank(tokens[:1], mask[:1], candidates, fast)
  assert np.argsort(-final[0]).tolist() == [0, 1, 2, 3, 4]


def test_albef_itm_head_is_an_alternative_slow_scorer():
  """The ITM log-odds of ALBEF's fusion encoder score pairs through the same scorer."""
  from jaxret.models import albef  # pylint: disable=import-outside-toplevel
  model = albef.Albef(vocab_size=VOCAB, text_len=LENGTH, image={'variant': 'mu/8'},
                      text={'variant': 'mu', 'depth': 1}, fusion={'variant': 'mu', 'depth': 1},
                      embed_dim=16)
  rng = np.random.default_rng(1)
  images = rng.integers(0, 255, size=(4, 32, 32, 3), dtype=np.uint8)
  tokens = np.array([[2, 7, 9, 11, 3, 0, 0, 0, 0, 0]], np.int32)
  mask = (tokens > 0).astype(np.int32)
  params = jax.jit(model.init)(jax.random.key(0), images[:1].astype(np.float32), tokens,
                               mask)['params']
  scorer = scorer_lib.SlowScorer(model, params, ml_collections.ConfigDict(
      {'image_mean': [0.5] * 3, 'image_std': [0.5] * 3}), candidate_buckets=(4,),
                                 query_buckets=(1,), length_buckets=(LENGTH,), image_batch=4)
  scores = scorer.score(tokens, mask, scorer.visual_tokens(images)[None])
  normalised = (images / 255.0 - 0.5) / 0.5
  _, image_out = model.apply({'params': params}, normalised, method=model.encode_image)
  expected = model.apply({'params': params}, image_out['encoded'], np.repeat(tokens, 4, 0),
                         np.repeat(mask, 4, 0), method=model.itm_scores)
  np.testing.assert_allclose(scores[0], expected, rtol=1e-5, atol=1e-4)
  assert np.ptp(scores) > 0  # Different images get different scores.


def test_fast_slow_end_to_end_eval_report_and_stored_visual_tokens(tmp_path):
  """Distil from a tiny slow workdir, evaluate (table, JSON, plot), then export and
  index, which stores the slow visual tokens that the re-ranker loads."""
  import json  # pylint: disable=import-outside-toplevel
  from conftest import run_main  # pylint: disable=import-outside-toplevel
  from method_configs import teacher_workdir  # pylint: disable=import-outside-toplevel
  from jaxret.config import workdir as workdir_config  # pylint: disable=import-outside-toplevel
  slow_dir = teacher_workdir()
  workdir = tmp_path / 'fs'
  config = (f'--config=configs/distill.py:runlocal,slow={slow_dir},fast={workdir},'
            'candidates=student')
  run_main('--mode=train', config, f'--workdir={workdir}', '--config.total_steps=2')
  result = run_main('--mode=eval', f'--workdir={workdir}')
  assert '| text→image |' in result.stdout
  with open(workdir / 'eval' / 'fast_slow.json') as f:
    report = json.load(f)
  names = [(row['name'], row['k']) for row in report['rows']]
  assert names == [('Fast', None), ('Fast distilled', None), ('Slow', None), ('Fast+Slow', 5),
                   ('Fast+Slow', 10)]
  assert report['slow_visual_dtype'] == 'bfloat16' and report['slow_model'] == 'SlowCaptioner'
  assert all(row['query_ms'] > 0 for row in report['rows'])
  rows = {f'{name} K={k}' if k else name: row for (name, k), row in zip(names, report['rows'])}
  # Stored keys and values: more bytes per image than the tokens, the same ranking.
  storage = report['slow_storage']
  assert storage['keys_values']['bytes_per_image'] > storage['tokens']['bytes_per_image']
  assert storage['keys_values']['queries'] == storage['tokens']['queries'] > 0
  assert rows['Fast']['all_captions/t2i/R@1'] == rows['Fast distilled']['all_captions/t2i/R@1']
  # The all-caption figures, taken a block of captions at a time, are the plain retrieval
  # evaluator's over the whole split.
  run_main('--mode=eval', f'--workdir={workdir}', f'--config=configs/workdir.py:{workdir}',
           '--config.eval.evaluator=retrieval')
  with open(workdir / 'eval' / 'results.json') as f:
    plain = json.load(f)
  assert plain['num_texts'] > 256  # More than one block.
  for k in (1, 5, 10):
    assert rows['Fast'][f'all_captions/t2i/R@{k}'] == pytest.approx(plain[f't2i/R@{k}'],
                                                                     abs=1e-6)
  for row in report['rows']:  # Fractions of the queries, rising with K.
    assert row['k'] is None or row['name'] == 'Fast+Slow'  # The schema.
    recalls = [row[f't2i/R@{k}'] for k in (1, 5, 10)]
    assert recalls == sorted(recalls)
    assert all(r * report['queries'] == pytest.approx(round(r * report['queries']))
               for r in recalls)
  # The fast model is this workdir (fast=), so its row is the distilled one's.
  for key in ('t2i/R@1', 't2i/R@5', 't2i/R@10', 't2i/median_rank'):
    assert rows['Fast'][key] == rows['Fast distilled'][key], key
  # Re-ranking the top K reorders only those K: from K on, recall is the fast model's.
  for k in (5, 10):
    for at in (5, 10):
      if at >= k:
        assert rows[f'Fast+Slow K={k}'][f't2i/R@{at}'] == rows['Fast distilled'][f't2i/R@{at}']
  assert (workdir / 'eval' / 'fast_slow.md').read_text().count('\n') == len(names) + 2
  assert (workdir / 'eval' / 'fast_slow.png').stat().st_size > 0
  run_main('--mode=export', f'--workdir={workdir}')
  run_main('--mode=index', f'--workdir={workdir}')
  reranker = reranker_lib.for_workdir(workdir_config.load(str(workdir)), str(workdir))
  candidates = list(reranker.row_of)[:3]
  final, slow_scores = reranker('a big red circle', candidates, [0.5, 0.4, 0.3])
  np.testing.assert_allclose(final, slow_scores + reranker.beta * np.array([0.5, 0.4, 0.3]),
                             rtol=1e-5)
  # Stored tokens, but keys and values asked for: refused until --mode=index rebuilds them.
  config = workdir_config.load(str(workdir))
  config.rerank.features = 'keys_values'
  from jaxret import errors  # pylint: disable=import-outside-toplevel
  with pytest.raises(errors.UserError, match="stored slow features are tokens but"):
    reranker_lib.for_workdir(config, str(workdir))


def test_refusals_of_a_missing_teacher_a_mismatched_slow_workdir_and_no_stored_features(
    tmp_path):
  """One-line refusals before any work, nothing written."""
  from jaxret import errors  # pylint: disable=import-outside-toplevel
  from jaxret.objectives import distill as distill_objective  # pylint: disable=import-outside-toplevel,line-too-long
  from jaxret.rerank import visual_store  # pylint: disable=import-outside-toplevel
  missing = str(tmp_path / 'no-such-workdir')
  loss = {'name': 'distill', 'teacher': missing, 'alpha': 1.0, 'teacher_temperature': 1.0,
          'student_temperature': 0.0, 'num_candidates': 8, 'candidates': 'random',
          'targets': 'all'}
  with pytest.raises(errors.UserError, match='is not a trained slow-model workdir'):
    distill_objective.DistillObjective(None, None, ml_collections.ConfigDict(loss), None)
  with pytest.raises(errors.UserError, match="unknown loss.targets 'own'; known: all, negatives"):
    distill_objective.DistillObjective(None, None, ml_collections.ConfigDict(
        {**loss, 'targets': 'own'}), None)
  rerank = ml_collections.ConfigDict({'candidate_buckets': (10,), 'length_buckets': (8,),
                                      'storage_dtype': 'bfloat16', 'features': 'tokens'})
  with pytest.raises(errors.UserError, match='is not a trained slow-model workdir'):
    reranker_lib.restore_scorer(missing, rerank, ml_collections.ConfigDict({'image_size': 64}))
  other = tmp_path / 'slow-32px'
  other.mkdir()
  (other / 'config.json').write_text('{"data": {"image_size": 32}}')
  with pytest.raises(errors.UserError, match='reads 32px images but the fast model 64px'):
    reranker_lib.restore_scorer(str(other), rerank, ml_collections.ConfigDict({'image_size': 64}))
  with pytest.raises(errors.UserError, match='no slow visual tokens'):
    visual_store.load(visual_store.directory(str(tmp_path)))
  assert sorted(p.name for p in tmp_path.iterdir()) == ['slow-32px']


def test_reranker_measures_each_candidate_bucket():
  """Every (candidate bucket, length bucket) program is compiled before serving, and
  each candidate bucket is timed on the longest captions, so a budget holds for all."""
  class Scorer:
    candidate_buckets = (2, 4)
    length_buckets = (3, 6, 12)  # 12 is past the tokenizer's 8: probed at 8.
    seen = []

    def score(self, tokens, mask, visual):
      self.seen.append((*visual.shape[:2], int(mask.sum())))
      return np.zeros(visual.shape[:2], np.float32)

  class Tokenizer:
    def encode(self, texts):
      return np.ones((len(texts), 8), np.int32), np.ones((len(texts), 8), np.int32)

  scorer = Scorer()
  reranker = reranker_lib.FastSlowReranker(scorer, Tokenizer(), np.arange(10),
                                           np.zeros((10, 3, 4), np.float32), num_candidates=4,
                                           beta=1.0)
  costs = reranker.measure_costs(repeats=2)
  assert set(costs) == {2, 4} and all(ms >= 0 for ms in costs.values())
  assert reranker.bucket_costs_ms is costs
  # Each candidate bucket: one call per length bucket to compile, then the timed
  # repeats at the longest length, on that many candidates.
  assert scorer.seen == [(1, k, n) for k in (2, 4) for n in (3, 6, 8, 8, 8)]


def test_the_study_refuses_an_override_its_workdirs_config_lacks(tmp_path, tiny_config):
  """benchmarks.fast_slow's `evaluate` may add only the slow evaluators' settings;
  a misspelt key is refused before any work, never added and then ignored."""
  from benchmarks import fast_slow as study  # pylint: disable=import-outside-toplevel
  from jaxret.config import workdir as workdir_config  # pylint: disable=import-outside-toplevel
  workdir_config.save(tiny_config, str(tmp_path))
  with pytest.raises(KeyError, match='eval.evaluatr'):
    study.evaluate(str(tmp_path), **{'eval.evaluatr': 'retrieval'})
  with pytest.raises(KeyError, match='rerank.kz'):
    study.evaluate(str(tmp_path), **{'eval.max_queries': 5, 'rerank.kz': (10,)})


def test_the_study_report_shows_both_regimes_per_seed_against_their_own_fast():
  """The longer regime's rows: the continued Fast and each continued student, with the
  per-seed R@1 and the gain against the continued Fast (not the 200-step one); one seed's
  row shows no spread, and parts the results lack get no table."""
  from benchmarks import fast_slow_report  # pylint: disable=import-outside-toplevel

  def runs(*r1):
    return {'per_seed': [{'t2i/R@1': r} for r in r1],
            't2i/R@1': {'mean': float(np.mean(r1)),
                        'std': float(np.std(r1, ddof=1)) if len(r1) > 1 else None}}

  student = {'candidates': 'random', 'targets': 'all', 'num_candidates': 8, 'temperature': 1.0,
             'alpha': 1.0, 'seeds': [0, 1], **runs(0.30, 0.34),
             'gain_over_fast': {'mean': 0.03, 'std': 0.01}}
  whole_batch = {**student, 'targets': 'negatives', 'num_candidates': 0, 'seeds': [0],
                 **runs(0.25), 'gain_over_fast': {'mean': 0.05, 'std': None}}
  results = {'teacher_targets': [], 'distillation': {
      'gallery': 500, 'seeds': [0, 1], 'fast': runs(0.2, 0.22), 'variants': [whole_batch],
      'continued': {'from_steps': 200, 'steps': 400, 'fast': runs(0.28, 0.30),
                    'variants': [student]}}}
  table = fast_slow_report.table(results)
  # The 200-step table has the same columns.
  assert '| Fast | | | | | | 2 | 21.0 ± 1.4 | 20.0, 22.0 | |' in table
  assert ('| Fast distilled | random | negatives | batch | 1 | 1 | 1 | 25.0 | 25.0 | +5.0 |'
          in table)
  assert table.startswith('Distillation:') and 'gallery' not in table  # No speed part.
  assert 'trained 400 more steps from Fast\'s checkpoint (200 steps)' in table
  assert '| Fast, continued | | | | | | 2 | 29.0 ± 1.4 | 28.0, 30.0 | |' in table
  assert ('| Fast distilled, continued | random | all | 8 | 1 | 1 | 2 | 32.0 ± 2.8 | 30.0, 34.0 | '
          '+3.0 ± 1.0 |') in table
  del results['distillation']['continued']
  assert 'continued' not in fast_slow_report.table(results)


def test_a_study_variant_names_its_targets_and_seeds_and_gets_its_own_workdir():
  """'candidates:|B_i|:T:alpha[:targets][:seeds]': targets is 'all' unless named, and a
  'negatives' student trains in a workdir of its own, never reusing an 'all' one; nor
  does a model of the data-limited regime (--num_train) reuse one of all the images."""
  from absl import app  # pylint: disable=import-outside-toplevel
  from absl import flags  # pylint: disable=import-outside-toplevel
  from absl.testing import flagsaver  # pylint: disable=import-outside-toplevel
  from benchmarks import fast_slow as study  # pylint: disable=import-outside-toplevel
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
  with flagsaver.flagsaver(seeds=3, root='/r'):
    plain = {'candidates': 'random', 'num_candidates': 8, 'temperature': 1.0, 'alpha': 1.0,
             'targets': 'all'}
    assert study.parse_variant('random:8:1:1', 3) == (plain, 3)
    negatives = ({**plain, 'candidates': 'student', 'temperature': 4.0,
                  'targets': 'negatives'}, 2)
    assert study.parse_variant('student:8:4:1:negatives:2', 3) == negatives
    assert study.parse_variant('student:8:4:1:2:negatives', 3) == negatives
    for bad in ('random:8:1:1:own', 'random:8:1', 'random:8:1:1:all:2:3'):
      with pytest.raises(app.UsageError, match='a variant is candidates'):
        study.parse_variant(bad, 3)
    assert study.variant_dir(plain, 0) == '/r/distill-random-8-1-1-s0'
    assert study.variant_dir(negatives[0], 1, 400) == '/r/distill-cont400-student-8-4-1-negatives-s1'
    assert 'targets=negatives,' in study.distill_config('/r/slow', '/r/fast-s1', negatives[0], 1)
    assert study.fast_dir(2) == '/r/fast-s2'
  # The data-limited regime never reuses a workdir trained on all the images.
  with flagsaver.flagsaver(seeds=3, root='/r', num_train=1000):
    assert study.root() == '/r/train1000'
    assert study.variant_dir(plain, 0) == '/r/train1000/distill-random-8-1-1-s0'
    assert study.fast_dir(2, 400) == '/r/train1000/fast-cont400-s2'
    assert study.teacher_dir() == '/r/train1000/slow'
  # Nor do the students of another teacher reuse those of the teacher of their images; the
  # teacher of all the images is the one of --root.
  with flagsaver.flagsaver(seeds=3, root='/r', num_train=1000, teacher='held_out'):
    assert study.teacher_dir() == '/r/train1000/slow-held-out'
    assert study.variant_dir(plain, 0) == '/r/train1000/distill-held-out-random-8-1-1-s0'
    assert study.fast_dir(0) == '/r/train1000/fast-s0'
  with flagsaver.flagsaver(seeds=3, root='/r', num_train=1000, teacher='all_images'):
    assert study.teacher_dir() == '/r/slow'
    assert study.variant_dir(plain, 0) == '/r/train1000/distill-all-images-random-8-1-1-s0'
  with flagsaver.flagsaver(teacher='held_out', num_train=0):
    with pytest.raises(app.UsageError, match='--teacher=held_out needs --num_train'):
      study.main([])


def test_the_negatives_diagnostic_ranks_as_scipy_and_is_reported():
  """`teacher_negatives`' rank correlation is Spearman's (scipy's, row by row), and the
  report shows its table only when the study measured it."""
  from scipy import stats  # pylint: disable=import-outside-toplevel
  from benchmarks import fast_slow_diagnostics as diagnostics  # pylint: disable=import-outside-toplevel
  from benchmarks import fast_slow_report  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  a, b = rng.normal(size=(5, 7)), rng.normal(size=(5, 7))
  b[0] = a[0] * 3 + 1  # Same order: 1.
  b[1] = -a[1]  # Reversed: −1.
  expected = [stats.spearmanr(x, y).statistic for x, y in zip(a, b)]
  np.testing.assert_allclose(diagnostics._spearman(a, b), expected, rtol=1e-12)  # pylint: disable=protected-access
  np.testing.assert_allclose(expected[:2], [1, -1])
  assert fast_slow_report.negatives_table(None) == []
  lines = fast_slow_report.negatives_table({
      'fast': '/r/fast-s0', 'num_candidates': 8, 'rows': {'random/T=1': {
          'top_agree': 0.6, 'spearman': 0.75, 'cross_entropy': 1.45, 'entropy': 0.2}}})
  assert '| random | 1 | 0.60 | 0.75 | 1.45 | 0.20 |' in lines
  assert 'uniform: 1.95' in lines[1]


def test_the_teacher_diagnostics_read_each_model_in_its_own_tokens(demo_copy):
  """The diagnostics' student scores are Fast's own: its captions in its own tokens, even
  when the teacher (trained on other images) orders the vocabulary differently."""
  import json  # pylint: disable=import-outside-toplevel
  from method_configs import teacher_workdir  # pylint: disable=import-outside-toplevel
  from benchmarks import fast_slow_diagnostics as diagnostics  # pylint: disable=import-outside-toplevel
  from jaxret.config import workdir as workdir_config  # pylint: disable=import-outside-toplevel
  from jaxret.inference import restore as restore_lib  # pylint: disable=import-outside-toplevel
  from jaxret.models import dual_encoder  # pylint: disable=import-outside-toplevel
  teacher = teacher_workdir()
  path = demo_copy / 'tokenizer.json'
  spec = json.loads(path.read_text())
  vocab = spec['model']['vocab']
  first, second = sorted((w for w, i in vocab.items() if i >= 5), key=vocab.get)[:2]
  vocab[first], vocab[second] = vocab[second], vocab[first]  # The two commonest words.
  path.write_text(json.dumps(spec))
  batch, _, scores = next(diagnostics.first_batches(teacher, str(demo_copy), False, 1))
  slow_restored = restore_lib.restore(workdir_config.load(teacher), teacher)
  fast = restore_lib.restore(workdir_config.load(str(demo_copy)), str(demo_copy))
  texts = slow_restored.tokenizer.backend.decode_batch(np.asarray(batch['text']).tolist())
  tokens, mask = fast.tokenizer.encode(texts)
  assert (tokens != np.asarray(batch['text'])).any()  # The two orders differ on this batch.
  text = fast.model.apply({'params': fast.params}, tokens, mask,
                          method=fast.model.encode_text)[0]
  image = fast.model.apply({'params': fast.params}, batch['image'],
                           method=fast.model.encode_image)[0]
  scale = float(dual_encoder.clamped_logit_scale(fast.params['logit_scale']))
  np.testing.assert_allclose(scores, scale * np.asarray(text) @ np.asarray(image).T,
                             rtol=1e-4, atol=1e-4)

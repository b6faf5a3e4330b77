r"""Thinking Fast and Slow reproduced on the built-in data: distillation and the speed-up.

  python -m benchmarks.fast_slow [--sizes=500,5000,50000] [--seeds=3] [--steps=200] \
      [--slow_steps=400] [--root=/tmp/jaxret-fast-slow] [--variants=student:8:1:1,random:8:1:1] \
      [--parts=distillation,speed]

Trains (or reuses, when a workdir already holds its last checkpoint) under --root:
the slow captioner `slow` (configs/caption.py, seed 0: the teacher and the
re-ranker), and per seed s the fast dual encoder `fast-s<s>` (configs/demo.py)
and one distilled student per variant `distill-<candidates>-<|B_i|>-<T>-<α>-s<s>`
(configs/distill.py: how B_i's other images are chosen, |B_i| (0: the whole
batch), the teacher's temperature T and the weight α). The first variant is
"Fast distilled" of the speed study.

Evaluates:
- distillation: text→image R@1/5/10 over all test captions (500 images) of Fast
  and of every variant, per seed, with mean and sample standard deviation;
- speed, for each gallery size N (the test split generated with N images, in
  near-duplicate groups; seed 0's models): the `fast_slow` evaluator's rows (Fast
  (ScaNN), Fast distilled, exhaustive Slow, Fast+Slow at K in 10, 50, 100) on a
  fixed sample of queries (one caption each of --queries images spread over the
  split; fewer at 50,000 images, see --max_slow_seconds) and the slow features'
  storage and speed (visual tokens against stored keys and values).

`--parts` runs the distillation study, the speed study or both (a part's run keeps the
other part's latest results in --out; the speed study needs only seed 0's models).
Writes benchmarks/results/fast_slow.{json,md,png} (--out): the JSON holds
{"sizes": [{"gallery", "queries", "rows": [{"name", "k", "t2i/R@1", ...,
"query_ms"}], ...}], "distillation": {...}}; the PNG plots R@1 against ms/query
(log-log), one line per gallery size.
"""

import os
import sys
import time

from absl import app
from absl import flags
import jax
import numpy as np

from benchmarks import training
from jaxret import files
from jaxret.config import workdir as workdir_config
from jaxret.data import pipeline
from jaxret.data import sources
from jaxret.evaluate import fast_slow as fast_slow_eval
from jaxret.evaluate import run as evaluate_run
from jaxret.inference import restore as restore_lib
from jaxret.losses import distill as distill_loss
from jaxret.rerank import scorer as scorer_lib

PARTS = ('distillation', 'speed')
_PARTS = flags.DEFINE_list('parts', list(PARTS), 'What to measure: the distillation study, '
                           'the speed study by gallery size, or both (each part run updates '
                           'its own keys of --out).')
_SIZES = flags.DEFINE_list('sizes', ['500', '5000', '50000'], 'Test gallery sizes.')
_SEEDS = flags.DEFINE_integer('seeds', 3, 'Training seeds of Fast and of each distilled variant.')
_STEPS = flags.DEFINE_integer('steps', 200, 'Training steps of Fast and the students.')
_SLOW_STEPS = flags.DEFINE_integer('slow_steps', 400, 'Training steps of the slow captioner.')
_ROOT = flags.DEFINE_string('root', '/tmp/jaxret-fast-slow', 'Where the workdirs live.')
_VARIANTS = flags.DEFINE_list(
    'variants', ['student:8:1:1', 'random:8:1:1'],
    'Distillation variants candidates:|B_i|:T:alpha; the first is "Fast distilled". None: '
    'no distillation; the speed study then re-ranks the plain Fast model.')
_ABLATION_SEEDS = flags.DEFINE_integer(
    'ablation_seeds', 1, 'Seeds of the variants after the first (the ablation); the first '
    'variant ("Fast distilled") gets --seeds.')
_GROUP_BATCHES = flags.DEFINE_bool(
    'group_batches', False, 'Fast and the students train on batches of near-duplicate groups '
    '(data.group_batches).')
_TEMPERATURES = flags.DEFINE_list('temperatures', ['1', '2', '4', '8', '16'],
                                  "Teacher temperatures of the teacher-target statistics.")
_QUERIES = flags.DEFINE_integer('queries', 100, 'Queries of the speed study (images sampled).')
_BASE_QUERIES = flags.DEFINE_integer(
    'base_queries', 0, 'Queries of the speed study at 500 images (0: one caption of every '
    'test image), where Slow and Fast are compared.')
_SLOW_ALL_CAPTIONS = flags.DEFINE_bool(
    'slow_all_captions', True, 'Also score exhaustive Slow over all 2,500 test captions '
    '(1.25M pairs: about 15 minutes on 2 cores).')
_MIN_QUERIES = flags.DEFINE_integer('min_queries', 50, 'Fewest queries at any size.')
_MAX_SLOW_SECONDS = flags.DEFINE_float(
    'max_slow_seconds', 1800, 'Budget of exhaustive Slow per size: the queries are cut to fit '
    'it (never below --min_queries), from a per-pair cost measured at the smallest size.')
_OUT = flags.DEFINE_string('out', 'benchmarks/results/fast_slow.json', 'Results JSON.')

BASE_SIZE = 500  # The test split of the training configs: distillation is measured on it.


def train(workdir, config, *overrides):
  """`training.train` with the configs' 50 warm-up steps, or an eighth of a shorter run."""
  steps = next(int(o.split('=')[1]) for o in overrides if o.startswith('--config.total_steps='))
  overrides = [o for o in overrides if not o.startswith('--config.total_steps=')]
  training.train(workdir, config, steps, *overrides,
                 f'--config.optimizer.warmup_steps={min(50, max(steps // 8, 1))}')


def parse_variant(text):
  candidates, count, temperature, alpha = text.split(':')
  return {'candidates': candidates, 'num_candidates': int(count),
          'temperature': float(temperature), 'alpha': float(alpha)}


def variant_dir(variant, seed):
  return os.path.join(_ROOT.value, 'distill-{candidates}-{num_candidates}-{temperature:g}-'
                      '{alpha:g}-s{seed}'.format(**variant, seed=seed))


def evaluate(workdir, **overrides):
  """`--mode=eval` of `workdir` with config overrides {'data.num_test': N, ...}."""
  config = workdir_config.load(workdir)
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.split('.')
    for parent in parents:
      node = node[parent]
    node[leaf] = value
  return evaluate_run.evaluate(config, workdir)


def all_captions(workdir):
  """Text→image R@1/5/10 over all captions of the 500-image test split."""
  results = evaluate(workdir, **{'eval.evaluator': 'retrieval'})
  return {f't2i/R@{k}': results[f't2i/R@{k}'] for k in (1, 5, 10)}


def spread(values):
  values = np.asarray(values, np.float64)
  return {'mean': float(values.mean()),
          'std': float(values.std(ddof=1)) if len(values) > 1 else 0.0}


def teacher_targets(slow, fast, group_batches, temperatures, num_candidates=8, batches=4):
  """What the teacher's soft targets say beyond the contrastive one-hot, on the first
  `batches` training batches (seed 0): for B_i of `num_candidates` images chosen at
  random or by the Fast model's score (`student`), and each teacher temperature T, the
  fraction of captions whose own image the teacher ranks first in B_i, the teacher's
  mean probability of it, and the mean entropy of p over B_i (nats; log |B_i| is
  uniform)."""
  slow_config, fast_config = workdir_config.load(slow), workdir_config.load(fast)
  teacher, student = restore_lib.restore(slow_config, slow), restore_lib.restore(fast_config, fast)
  data_config = workdir_config.load(fast).data
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


def distillation(slow, seeds, variants):
  fast = [all_captions(os.path.join(_ROOT.value, f'fast-s{s}')) for s in seeds]
  out = {'gallery': BASE_SIZE, 'captions': 'all test captions', 'seeds': list(seeds),
         'teacher': slow, 'steps': _STEPS.value, 'group_batches': _GROUP_BATCHES.value,
         'fast': {'per_seed': fast, 't2i/R@1': spread([r['t2i/R@1'] for r in fast])},
         'variants': []}
  for i, variant in enumerate(variants):
    variant_seeds = seeds if i == 0 else seeds[:_ABLATION_SEEDS.value]
    runs = [all_captions(variant_dir(variant, s)) for s in variant_seeds]
    out['variants'].append({**variant, 'seeds': variant_seeds, 'per_seed': runs,
                            't2i/R@1': spread([r['t2i/R@1'] for r in runs]),
                            'gain_over_fast': spread([r['t2i/R@1'] - f['t2i/R@1']
                                                      for r, f in zip(runs, fast)])})
  return out


def slow_all_captions(slow):
  """Exhaustive Slow over all test captions (500 images): R@1/5/10 and its cost per pair."""
  results = evaluate(slow, **{'eval.evaluator': 'slow_retrieval', 'eval.max_queries': 0,
                              'eval.query_captions': 'all'})
  return {**{f't2i/R@{k}': results[f't2i/R@{k}'] for k in (1, 5, 10)},
          'captions': results['num_texts'], 'pair_us': results['pair_us'],
          'query_ms': 1000 * results['seconds_per_query']}


def speed(size, student, fast, pair_seconds, slow):
  """The fast_slow evaluator's report at gallery `size`."""
  queries = _BASE_QUERIES.value if size == BASE_SIZE else _QUERIES.value
  if pair_seconds:  # Exhaustive Slow's time grows with the gallery: fit the budget.
    fits = int(_MAX_SLOW_SECONDS.value / (pair_seconds * size))
    queries = max(min(queries, fits), _MIN_QUERIES.value)
  start = time.time()
  evaluate(student, **{'data.num_test': size, 'eval.max_queries': queries,
                       'eval.evaluator': 'fast_slow', 'rerank.slow_workdir': slow,
                       'rerank.fast_workdir': fast, 'rerank.ks': (10, 50, 100)})
  report = files.read_json(os.path.join(student, 'eval', 'fast_slow.json'), 'no report')
  report['seconds'] = time.time() - start
  return report


def table(results):
  lines = ['| gallery | queries | model | K | R@1 | R@5 | R@10 | ms/query |',
           '|---|---|---|---|---|---|---|---|']
  for size in results.get('sizes', []):
    for row in size['rows']:
      lines.append(f'| {size["gallery"]:,} | {size["queries"]} | {row["name"]} | '
                   f'{row["k"] or ""} | ' + ' | '.join(
                       f'{100 * row[f"t2i/R@{k}"]:.1f}' for k in (1, 5, 10))
                   + f' | {row["query_ms"]:.1f} |')
  lines += ['', 'Slow features stored per image, and one query alone over 500 of them:', '',
            '| gallery | features | bytes per image | ms/query | µs/pair |', '|---|---|---|---|---|']
  for size in results.get('sizes', []):
    for kind, row in size['slow_storage'].items():
      lines.append(f'| {size["gallery"]:,} | {kind} | {row["bytes_per_image"]:,} | '
                   f'{row["query_ms"]:.1f} | {row["pair_us"]:.0f} |')
  if 'distillation' not in results:
    return '\n'.join(lines) + '\n'
  distill, slow = results['distillation'], results['slow']
  lines += ['', f'Distillation: text→image R@1 over all test captions ({distill["gallery"]} '
            f'images; mean ± sample std over the seeds; gain: per seed, against Fast of '
            f'the same seed):', '',
            '| model | candidates | \\|B_i\\| | T | α | seeds | R@1 | gain over Fast |',
            '|---|---|---|---|---|---|---|---|',
            '| Fast | | | | | {} | {:.1f} ± {:.1f} | |'.format(
                len(distill['seeds']), 100 * distill['fast']['t2i/R@1']['mean'],
                100 * distill['fast']['t2i/R@1']['std'])]
  for v in distill['variants']:
    lines.append('| Fast distilled | {} | {} | {:g} | {:g} | {} | {:.1f} ± {:.1f} | '
                 '{:+.1f} ± {:.1f} |'.format(
                     v['candidates'], v['num_candidates'] or 'batch', v['temperature'],
                     v['alpha'], len(v['seeds']), 100 * v['t2i/R@1']['mean'],
                     100 * v['t2i/R@1']['std'], 100 * v['gain_over_fast']['mean'],
                     100 * v['gain_over_fast']['std']))
  if slow:
    lines.append(f'| Slow (exhaustive, seed 0) | | | | | 1 | {100 * slow["t2i/R@1"]:.1f} | |')
    lines += ['', f'Slow over all {slow["captions"]} test captions: R@5 '
              f'{100 * slow["t2i/R@5"]:.1f}, R@10 {100 * slow["t2i/R@10"]:.1f}, '
              f'{slow["pair_us"]:.0f} µs per (caption, image) pair.']
  lines += ['', "The teacher's targets over B_i (|B_i| = 8; first training batches): top-1 = "
            "its own image ranked first, p(own), entropy of p (nats; uniform: 2.08):", '',
            '| batches | B_i | T | top-1 | p(own) | entropy |', '|---|---|---|---|---|---|']
  for targets in results['teacher_targets']:
    for key, row in targets['rows'].items():
      candidates, temperature = key.split('/T=')
      lines.append(f'| {"grouped" if targets["group_batches"] else "random"} | {candidates} '
                   f'| {temperature} | {row["top1"]:.2f} | {row["p_own"]:.2f} | '
                   f'{row["entropy"]:.2f} |')
  return '\n'.join(lines) + '\n'


def plot(results, path):
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use('Agg')
  from matplotlib import pyplot  # pylint: disable=import-outside-toplevel
  figure, axis = pyplot.subplots(figsize=(7, 5))
  markers = {'Fast': 's', 'Fast distilled': 'D', 'Slow': '*', 'Fast+Slow': 'o'}
  # A log axis has no 0: an R@1 of 0 is drawn hollow at half the smallest one above 0.
  floor = min([100 * r['t2i/R@1'] for size in results['sizes'] for r in size['rows']
               if r['t2i/R@1'] > 0] or [1.0]) / 2

  def shown(row):
    return 100 * row['t2i/R@1'] or floor

  for size in results['sizes']:
    by_time = sorted(size['rows'], key=lambda r: r['query_ms'])  # A line left to right.
    line = axis.plot([r['query_ms'] for r in by_time], [shown(r) for r in by_time], ':',
                     alpha=0.4)[0]
    for row in size['rows']:
      axis.plot(row['query_ms'], shown(row), markers[row['name']], color=line.get_color(),
                fillstyle='full' if row['t2i/R@1'] else 'none')
      if row['k']:
        axis.annotate(f'K={row["k"]}', (row['query_ms'], shown(row)), fontsize=7)
    line.set_label(f'{size["gallery"]:,} images')
  for name, marker in markers.items():
    axis.plot([], [], marker, color='grey', label=name)
  if any(r['t2i/R@1'] == 0 for size in results['sizes'] for r in size['rows']):
    axis.plot([], [], 'o', color='grey', fillstyle='none', label=f'R@1 = 0 (drawn at {floor:g})')
  axis.set(xscale='log', yscale='log', xlabel='mean query time (ms)',
           ylabel='text→image R@1 (%)', title='Fast, Slow and Fast+Slow by gallery size')
  for ticks in (axis.yaxis.set_major_formatter, axis.yaxis.set_minor_formatter):
    ticks(matplotlib.ticker.FormatStrFormatter('%g'))  # 40, not 4×10¹.
  axis.legend(fontsize=8)
  figure.tight_layout()
  figure.savefig(path, dpi=100)
  pyplot.close(figure)


def main(argv):
  del argv
  parts = set(_PARTS.value)
  if not parts or parts - set(PARTS):
    raise app.UsageError(f'--parts takes {", ".join(PARTS)}')
  # The speed study needs seed 0's models only.
  seeds = list(range(_SEEDS.value)) if 'distillation' in parts else [0]
  variants = [parse_variant(v) for v in _VARIANTS.value]
  slow = os.path.join(_ROOT.value, 'slow')
  groups = f'--config.data.group_batches={_GROUP_BATCHES.value}'
  train(slow, 'configs/caption.py', f'--config.total_steps={_SLOW_STEPS.value}')
  for seed in seeds:
    fast = os.path.join(_ROOT.value, f'fast-s{seed}')
    train(fast, 'configs/demo.py', f'--config.total_steps={_STEPS.value}',
          f'--config.seed={seed}', groups)
    for i, variant in enumerate(variants):
      if i and seed >= _ABLATION_SEEDS.value:
        continue
      train(variant_dir(variant, seed),
            'configs/distill.py:slow={},fast={},candidates={candidates},'
            'num_candidates={num_candidates},temperature={temperature},alpha={alpha},'
            'seed={seed}'.format(slow, fast, **variant, seed=seed),
            f'--config.total_steps={_STEPS.value}', groups)
  fast = os.path.join(_ROOT.value, 'fast-s0')
  command = ' '.join(['python -m benchmarks.fast_slow'] + sys.argv[1:])
  if 'distillation' in parts:
    temperatures = [float(t) for t in _TEMPERATURES.value]
    save({'steps': {'fast': _STEPS.value, 'slow': _SLOW_STEPS.value},
          'distillation_command': command,
          'distillation': distillation(slow, seeds, variants),
          'teacher_targets': [teacher_targets(slow, fast, _GROUP_BATCHES.value, temperatures,
                                              batches=2)],
          'slow': slow_all_captions(slow) if _SLOW_ALL_CAPTIONS.value else None})
  if 'speed' in parts:
    pair_seconds = None
    for size in sorted(int(s) for s in _SIZES.value):
      report = speed(size, variant_dir(variants[0], 0) if variants else fast,
                     fast if variants else '', pair_seconds, slow)
      slow_row = next(r for r in report['rows'] if r['name'] == 'Slow')
      pair_seconds = slow_row['pair_us'] / 1e6
      print(fast_slow_eval.table(report), flush=True)
      save({'sizes': [{**report, 'command': command}]})  # Each size once it is measured.


def save(part):
  """Merges `part` into --out (re-read now: another part's run may have written it since
  this one started; a size replaces the same size and keeps the others), then rewrites
  the table and the plot."""
  out = _OUT.value
  results = files.read_json(out, f'{out} is unreadable') if os.path.exists(out) else {}
  by_size = {size['gallery']: size for size in results.get('sizes', []) + part.pop('sizes', [])}
  results.update(part, **({'sizes': [by_size[n] for n in sorted(by_size)]} if by_size else {}))
  files.write_json(out, results, indent=2)
  with files.atomic_file(out[:-len('.json')] + '.md') as f:
    f.write(table(results))
  if results.get('sizes'):
    plot(results, out[:-len('.json')] + '.png')
  print(table(results), flush=True)


if __name__ == '__main__':
  app.run(main)

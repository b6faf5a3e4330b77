r"""Thinking Fast and Slow reproduced on the built-in data: distillation and the speed-up.

  python -m benchmarks.fast_slow [--sizes=500,5000,50000] [--seeds=3] [--steps=200] \
      [--slow_steps=400] [--root=/tmp/jaxret-fast-slow] [--variants=random:8:1:1,student:8:1:1] \
      [--parts=distillation,speed,slow_models] [--slow_models=fine,coarse,itm] \
      [--continued=random:8:1:1] [--continued_steps=400] [--speed_models=base|continued] \
      [--num_train=N [--teacher=students_images|held_out|all_images]] [--group_batches]

Trains (or reuses, when a workdir already holds its last checkpoint) under --root:
the slow captioner `slow` (configs/caption.py, seed 0: the teacher and the
re-ranker), and per seed s the fast dual encoder `fast-s<s>` (configs/demo.py)
and one distilled student per variant `distill-<candidates>-<|B_i|>-<T>-<α>[-negatives]-s<s>`
(configs/distill.py: how B_i's other images are chosen, |B_i| (0: the whole
batch), the teacher's temperature T, the weight α, and whether p and q are compared
over all of B_i or its negatives only). The first variant is
"Fast distilled" of the speed study. The longer regime (--continued): per seed,
`fast-cont<N>-s<s>` and `distill-cont<N>-<variant>-s<s>`, both trained
N = --continued_steps more steps from fast-s<s>'s checkpoint (a fresh optimizer and
schedule), Fast without the teacher and the student with it. For the slow_models
part also `slow-coarse` (configs/caption.py:pyramid=coarse) and ALBEF `albef`
(configs/albef.py, its ITM head as the slow score). --num_train=N trains all of them
on the first N training images instead of the configs' 20,000 (under <root>/train<N>):
the data-limited regime, where Fast and the students see each image many times;
--teacher=held_out trains the teacher `slow-held-out` instead on the 20,000 images
after those N (its students `distill-held-out-...`), and --teacher=all_images
distils from the teacher of all the images, the first N included (--root's `slow`;
its students `distill-all-images-...`).

Evaluates:
- distillation: text→image R@1/5/10 over all test captions (500 images) of Fast
  and of every variant, per seed, with mean and sample standard deviation; the
  same for the continued Fast and students;
- speed, for each gallery size N (the test split generated with N images, in
  near-duplicate groups; seed 0's models, or with --speed_models=continued the
  continued Fast as the first stage): the `fast_slow` evaluator's rows (Fast
  (ScaNN), Fast distilled, exhaustive Slow, Fast+Slow at K in 10, 50, 100) on a
  fixed sample of queries (one caption each of --queries images spread over the
  split; fewer at 50,000 images, see --max_slow_seconds) and the slow features'
  storage and speed (visual tokens against stored keys and values);
- slow_models, which slow model: the captioner with the fine or the coarse feature
  pyramid, or ALBEF's ITM head; exhaustive Slow over all test captions (500
  images) of each of --slow_models, and the cost per pair and the bytes stored
  per image of all three timed side by side.

`--parts` picks the parts (a part's run keeps the other parts' latest results in --out,
and a slow model's row is kept until it is measured again; the speed study needs only
seed 0's models, and trains only the first variant when the distillation part is not
asked for). The defaults reproduce the whole study: 3 seeds of Fast and of each of the
five variants (18 trainings of 200 steps), 3 seeds of the continued Fast and student
(400 steps each), all three parts: about 12 hours on 2 CPU cores, estimated from the
parts' run times here.
Writes benchmarks/results/fast_slow.{json,md,png} (--out): the JSON holds
{"sizes": [{"gallery", "queries", "rows": [{"name", "k", "t2i/R@1", ...,
"query_ms"}], ...}], "distillation": {...}, "slow_models": {name: {...}},
"pair_costs": {...}}; the PNG plots R@1 against ms/query
(log-log), one line per gallery size.
"""

import functools
import operator
import os
import sys
import time

from absl import app
from absl import flags
import numpy as np

from benchmarks import fast_slow_diagnostics as diagnostics
from benchmarks import fast_slow_report
from benchmarks import training
from jaxret import files
from jaxret.config import workdir as workdir_config
from jaxret.data import sources
from jaxret.evaluate import fast_slow as fast_slow_eval
from jaxret.evaluate import run as evaluate_run
from jaxret.evaluate import slow_retrieval
from jaxret.inference import restore as restore_lib
from jaxret.losses import distill as distill_loss
from jaxret.rerank import scorer as scorer_lib

PARTS = ('distillation', 'speed', 'slow_models')
# The slow_models part: name -> (workdir under --root, config). The captioner's
# feature pyramid (fine: 16x16 visual tokens, coarse: the 8x8 patch grid) and ALBEF's
# ITM head in its place; `fine` is the teacher and re-ranker of the other parts.
SLOW_MODELS = {'fine': ('slow', 'configs/caption.py'),
               'coarse': ('slow-coarse', 'configs/caption.py:pyramid=coarse'),
               'itm': ('albef', 'configs/albef.py')}
_PARTS = flags.DEFINE_list('parts', list(PARTS), 'What to measure: the distillation study, '
                           'the speed study by gallery size, the slow-model ablation (each '
                           'part run updates its own keys of --out).')
_SIZES = flags.DEFINE_list('sizes', ['500', '5000', '50000'], 'Test gallery sizes.')
_SEEDS = flags.DEFINE_integer('seeds', 3, 'Training seeds of Fast and of each distilled variant.')
_STEPS = flags.DEFINE_integer('steps', 200, 'Training steps of Fast and the students.')
_SLOW_STEPS = flags.DEFINE_integer('slow_steps', 400, 'Training steps of the slow captioner.')
_ROOT = flags.DEFINE_string('root', '/tmp/jaxret-fast-slow', 'Where the workdirs live.')
_VARIANTS = flags.DEFINE_list(
    'variants', ['random:8:1:1', 'student:8:1:1', 'student:8:4:1', 'random:8:1:2',
                 'random:16:1:1'],
    'Distillation variants candidates:|B_i|:T:alpha[:targets][:seeds] (targets: all or '
    'negatives, loss.targets; all unless named); the first is "Fast distilled". '
    'None: no distillation; the speed study then re-ranks the plain Fast model.')
_ABLATION_SEEDS = flags.DEFINE_integer(
    'ablation_seeds', 3, 'Seeds of the variants after the first (the ablation) that name '
    'none; the first variant ("Fast distilled") gets --seeds unless it names its own.')
_CONTINUED = flags.DEFINE_list(
    'continued', ['random:8:1:1'], 'Distillation variants (as --variants; each with --seeds '
    'seeds unless it names its own) also trained --continued_steps more steps from Fast\'s '
    'checkpoint, against Fast trained as many more steps the same way: the longer regime.')
_CONTINUED_STEPS = flags.DEFINE_integer(
    'continued_steps', 400, 'Steps of the continued models (0: none), warm-started from '
    'fast-s<seed> (config.init.workdir) with a fresh optimizer and schedule.')
_SPEED_MODELS = flags.DEFINE_enum(
    'speed_models', 'base', ['base', 'continued'], "The speed study's seed-0 models: Fast "
    'and the first variant, whose top K Slow re-ranks (base), or the continued Fast alone, '
    'its top K re-ranked (continued: the stronger first stage; no distilled row).')
_NUM_TRAIN = flags.DEFINE_integer(
    'num_train', 0, 'Training images of the slow captioner, Fast and the students (0: the '
    "configs' 20,000); the workdirs then live under <root>/train<N>.")
# --teacher -> (the teacher's workdir, under root() or --root, the students' workdir tag).
TEACHERS = {'students_images': ('slow', ''), 'held_out': ('slow-held-out', 'held-out-'),
            'all_images': ('slow', 'all-images-')}
_TEACHER = flags.DEFINE_enum(
    'teacher', 'students_images', list(TEACHERS), "The students' teacher: the slow captioner "
    "trained on the students' images (students_images); with --num_train=N, on the configs' "
    '20,000 images after those N (held_out: data.first_train_image=N, so it has never seen '
    "them; `slow-held-out`), or on the configs' 20,000 from the first, the students' N "
    "included (all_images: --root's `slow`). Fast and the slow_models part's models stay on "
    'the first N.')
_GROUP_BATCHES = flags.DEFINE_bool(
    'group_batches', False, 'Fast and the students train on batches of near-duplicate groups '
    '(data.group_batches).')
_TEMPERATURES = flags.DEFINE_list('temperatures', ['1', '2', '4', '8', '16'],
                                  "Teacher temperatures of the teacher-target statistics.")
_QUERIES = flags.DEFINE_integer('queries', 100, 'Queries of the speed study (images sampled).')
_BASE_QUERIES = flags.DEFINE_integer(
    'base_queries', 0, 'Queries of the speed study at 500 images (0: one caption of every '
    'test image), where Slow and Fast are compared.')
_SLOW_MODELS = flags.DEFINE_list(
    'slow_models', list(SLOW_MODELS), 'Slow models of the slow_models part whose exhaustive '
    'Slow over all 2,500 test captions (1.25M pairs each: about 30 minutes for fine on 2 '
    'idle cores) is measured; the side-by-side cost per pair is measured for all of them.')
_ITM_STEPS = flags.DEFINE_integer('itm_steps', 350, "Training steps of ALBEF (the ITM slow model).")
_COST_QUERIES = flags.DEFINE_integer(
    'cost_queries', 50, 'Queries (first captions) of the side-by-side cost per pair.')
_COST_TURNS = flags.DEFINE_integer('cost_turns', 3, 'Turns of the side-by-side cost per pair.')
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


def parse_variant(text, seeds):
  """'candidates:|B_i|:T:alpha[:targets][:seeds]' -> (the distill config's settings,
  seeds: the number given, else `seeds`); targets (`loss.targets`) is 'all' unless
  named."""
  usage = f'a variant is candidates:|B_i|:T:alpha[:targets][:seeds], not {text!r}'
  fields = text.split(':')
  if not 4 <= len(fields) <= 6:
    raise app.UsageError(usage)
  candidates, count, temperature, alpha = fields[:4]
  targets, num_seeds = 'all', seeds
  for field in fields[4:]:
    if field.isdigit():
      num_seeds = int(field)
    elif field in distill_loss.TARGETS:
      targets = field
    else:
      raise app.UsageError(usage)
  if not 1 <= num_seeds <= _SEEDS.value:
    raise app.UsageError(f'variant {text!r}: 1 to --seeds={_SEEDS.value} seeds')
  return ({'candidates': candidates, 'num_candidates': int(count),
           'temperature': float(temperature), 'alpha': float(alpha), 'targets': targets},
          num_seeds)


def root():
  """Where the workdirs live: --root, or its train<N> with --num_train."""
  if _NUM_TRAIN.value:
    return os.path.join(_ROOT.value, f'train{_NUM_TRAIN.value}')
  return _ROOT.value


def teacher_dir():
  """The teacher's workdir (--teacher): all_images' is --root's, trained on all images."""
  name, _ = TEACHERS[_TEACHER.value]
  return os.path.join(_ROOT.value if _TEACHER.value == 'all_images' else root(), name)


def variant_dir(variant, seed, continued=0):
  """The student's workdir; `continued`: the one trained that many steps more from Fast."""
  targets = '' if variant['targets'] == 'all' else f"-{variant['targets']}"
  _, teacher = TEACHERS[_TEACHER.value]
  return os.path.join(root(), 'distill-{}{}{candidates}-{num_candidates}-{temperature:g}-'
                      '{alpha:g}{}-s{seed}'.format(teacher, f'cont{continued}-' if continued
                                                   else '', targets, **variant, seed=seed))


def fast_dir(seed, continued=0):
  """Fast's workdir; `continued`: Fast trained that many steps more from it."""
  return os.path.join(root(), f'fast-cont{continued}-s{seed}' if continued
                      else f'fast-s{seed}')


def distill_config(slow, fast, variant, seed):
  return ('configs/distill.py:slow={},fast={},candidates={candidates},'
          'num_candidates={num_candidates},targets={targets},temperature={temperature},'
          'alpha={alpha},seed={seed}'.format(slow, fast, **variant, seed=seed))


# Settings the slow evaluators read that a config without one lacks (ALBEF's): the only
# keys an override may add.
ADDABLE_EVAL_KEYS = ('eval.max_queries', 'eval.query_captions')


def evaluate(workdir, **overrides):
  """`--mode=eval` of `workdir` with config overrides {'data.num_test': N, ...}. A key
  the config lacks is refused (a misspelt one would be ignored), except those of
  `ADDABLE_EVAL_KEYS`."""
  config = workdir_config.load(workdir)
  with config.unlocked():
    for key, value in overrides.items():
      *parents, leaf = key.split('.')
      node = functools.reduce(operator.getitem, parents, config)
      if leaf not in node and key not in ADDABLE_EVAL_KEYS:
        raise KeyError(f'the config of {workdir} has no {key}')
      node[leaf] = value
  return evaluate_run.evaluate(config, workdir)


def all_captions(workdir):
  """Text→image R@1/5/10 over all captions of the 500-image test split."""
  results = evaluate(workdir, **{'eval.evaluator': 'retrieval'})
  return {f't2i/R@{k}': results[f't2i/R@{k}'] for k in (1, 5, 10)}


def spread(values):
  """Mean and sample std; the std of one value is undefined (None)."""
  values = np.asarray(values, np.float64)
  return {'mean': float(values.mean()),
          'std': float(values.std(ddof=1)) if len(values) > 1 else None}


def compare(seeds, variants, continued=0):
  """Fast and each (variant, its number of seeds) over all test captions, each variant's
  gain per seed against Fast of the same seed; `continued`: the models trained that many
  steps more from Fast's checkpoint."""
  fast_dirs = [fast_dir(s, continued) for s in seeds]
  fast = [all_captions(workdir) for workdir in fast_dirs]
  out = {'fast': {'per_seed': fast, 't2i/R@1': spread([r['t2i/R@1'] for r in fast]),
                  'top1_errors': [diagnostics.top1_errors(w) for w in fast_dirs]},
         'variants': []}
  for variant, num_seeds in variants:
    variant_seeds = seeds[:num_seeds]
    runs = [all_captions(variant_dir(variant, s, continued)) for s in variant_seeds]
    out['variants'].append({**variant, 'seeds': variant_seeds, 'per_seed': runs,
                            't2i/R@1': spread([r['t2i/R@1'] for r in runs]),
                            'gain_over_fast': spread([r['t2i/R@1'] - f['t2i/R@1']
                                                      for r, f in zip(runs, fast)])})
  return out


def distillation(slow, seeds, variants, continued):
  """The study's students against Fast, and those of `continued` (variants, steps) against
  Fast trained as many steps more."""
  out = {'gallery': BASE_SIZE, 'captions': 'all test captions', 'seeds': list(seeds),
         'teacher': slow, 'steps': _STEPS.value, 'group_batches': _GROUP_BATCHES.value,
         'num_train': _NUM_TRAIN.value or None,
         'teacher_images': _TEACHER.value,
         **compare(seeds, variants)}
  continued_variants, steps = continued
  if continued_variants and steps:
    out['continued'] = {'from_steps': _STEPS.value, 'steps': steps,
                        **compare(seeds, continued_variants, steps)}
  return out


def slow_all_captions(slow, steps):
  """Exhaustive Slow over all test captions (500 images): R@1/5/10 and its cost per pair."""
  results = evaluate(slow, **{'eval.evaluator': 'slow_retrieval', 'eval.max_queries': 0,
                              'eval.query_captions': 'all'})
  return {**{f't2i/R@{k}': results[f't2i/R@{k}'] for k in (1, 5, 10)}, 'steps': steps,
          'captions': results['num_texts'], 'pair_us': results['pair_us'],
          'query_ms': 1000 * results['seconds_per_query'], 'command': command_line()}


def pair_costs(workdirs, queries, turns):
  """µs per (caption, image) pair of each slow model {name: workdir}, timed side by side:
  the first captions of `queries` test images spread over the split against all 500
  images, each model compiled first (a call of the same shapes on fewer images), the
  models taking `turns` turns; the median turn. Also the bytes each stores per image."""
  models = {}
  for name, workdir in workdirs.items():
    config = workdir_config.load(workdir)
    restored = restore_lib.restore(config, workdir)
    scorer = scorer_lib.SlowScorer(
        restored.model, restored.params, config.data,
        candidate_buckets=config.rerank.candidate_buckets,
        length_buckets=config.rerank.length_buckets,
        storage_dtype=config.rerank.storage_dtype, features='tokens')
    records = sources.load_split(config.data, 'test')
    features = scorer.gallery_features(records.images)
    texts, _ = slow_retrieval.query_captions(records, queries, 'first')
    tokens, mask = restored.tokenizer.encode(texts)
    scorer.score_gallery(tokens, mask, features[:100])  # Compiles the one shape.
    models[name] = {'scorer': scorer, 'tokens': tokens, 'mask': mask, 'features': features,
                    'seconds': []}
  for _ in range(turns):
    for model in models.values():
      start = time.perf_counter()
      model['scorer'].score_gallery(model['tokens'], model['mask'], model['features'])
      model['seconds'].append(time.perf_counter() - start)
  return {'queries': queries, 'gallery': BASE_SIZE, 'turns': turns, 'command': command_line(),
          'models': {name: {'pair_us': 1e6 * float(np.median(m['seconds']))
                                       / (len(m['tokens']) * len(m['features'])),
                            'bytes_per_image': int(m['features'][0].nbytes)}
                     for name, m in models.items()}}


def command_line():
  return ' '.join(['python -m benchmarks.fast_slow'] + sys.argv[1:])


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


def main(argv):
  del argv
  parts = set(_PARTS.value)
  if not parts or parts - set(PARTS):
    raise app.UsageError(f'--parts takes {", ".join(PARTS)}')
  if set(_SLOW_MODELS.value) - set(SLOW_MODELS):
    raise app.UsageError(f'--slow_models takes {", ".join(SLOW_MODELS)}')
  # The speed study needs seed 0's models only.
  seeds = list(range(_SEEDS.value)) if 'distillation' in parts else [0]
  variants = [parse_variant(v, _SEEDS.value if i == 0 else _ABLATION_SEEDS.value)
              for i, v in enumerate(_VARIANTS.value)]
  continued = ([parse_variant(v, _SEEDS.value) for v in _CONTINUED.value]
               if _CONTINUED_STEPS.value else [])
  on_continued = 'speed' in parts and _SPEED_MODELS.value == 'continued'
  if on_continued and not _CONTINUED_STEPS.value:
    raise app.UsageError('--speed_models=continued needs --continued_steps')
  if _TEACHER.value != 'students_images' and not _NUM_TRAIN.value:
    raise app.UsageError(f'--teacher={_TEACHER.value} needs --num_train (the students\' '
                         'images, which the teacher skips or adds to)')
  if 'distillation' not in parts:  # Only the speed study's models, seed 0.
    variants, continued = ([] if on_continued else variants[:1]), []
  slow = teacher_dir()
  # The training images of every training; batches of groups for Fast and the students.
  images = [f'--config.data.num_train={_NUM_TRAIN.value}'] if _NUM_TRAIN.value else []
  data = [f'--config.data.group_batches={_GROUP_BATCHES.value}', *images]
  teacher_images = {'students_images': images, 'all_images': [],
                    'held_out': [f'--config.data.first_train_image={_NUM_TRAIN.value}']}
  train(slow, 'configs/caption.py', f'--config.total_steps={_SLOW_STEPS.value}',
        *teacher_images[_TEACHER.value])
  for seed in seeds:
    fast = fast_dir(seed)
    train(fast, 'configs/demo.py', f'--config.total_steps={_STEPS.value}',
          f'--config.seed={seed}', *data)
    steps = f'--config.total_steps={_STEPS.value}'
    for variant, num_seeds in variants:
      if seed < num_seeds:
        train(variant_dir(variant, seed), distill_config(slow, fast, variant, seed), steps,
              *data)
    # The longer regime: both trained --continued_steps more from Fast's checkpoint.
    steps = f'--config.total_steps={_CONTINUED_STEPS.value}'
    start = f'--config.init.workdir={fast}'
    if continued or on_continued:
      train(fast_dir(seed, _CONTINUED_STEPS.value), 'configs/demo.py', steps,
            f'--config.seed={seed}', *data, start)
    for variant, num_seeds in continued:
      if seed < num_seeds:
        train(variant_dir(variant, seed, _CONTINUED_STEPS.value),
              distill_config(slow, fast, variant, seed), steps, *data, start)
  fast = fast_dir(0)
  command = command_line()
  if 'distillation' in parts:
    temperatures = [float(t) for t in _TEMPERATURES.value]
    save({'steps': {'fast': _STEPS.value, 'slow': _SLOW_STEPS.value},
          'distillation_command': command,
          'distillation': distillation(slow, seeds, variants,
                                       (continued, _CONTINUED_STEPS.value)),
          'teacher_targets': [diagnostics.teacher_targets(
              slow, fast, _GROUP_BATCHES.value, temperatures, batches=2)],
          # What the 'negatives' targets ask of Fast, when a variant uses them.
          **({'teacher_negatives': diagnostics.teacher_negatives(
              slow, fast, temperatures, batches=2)}
             if any(v['targets'] == 'negatives' for v, _ in variants) else {})})
  if 'slow_models' in parts:
    steps = {'fine': _SLOW_STEPS.value, 'coarse': _SLOW_STEPS.value, 'itm': _ITM_STEPS.value}
    workdirs = {name: os.path.join(root(), SLOW_MODELS[name][0]) for name in SLOW_MODELS}
    for name, (_, config) in SLOW_MODELS.items():
      train(workdirs[name], config, f'--config.total_steps={steps[name]}', *images)
    save({'pair_costs': pair_costs(workdirs, _COST_QUERIES.value, _COST_TURNS.value)})
    for name in _SLOW_MODELS.value:
      save({'slow_models': {name: slow_all_captions(workdirs[name], steps[name])}})
  if 'speed' in parts:
    if on_continued:
      fast, student = fast_dir(0, _CONTINUED_STEPS.value), None
    else:
      student = variant_dir(variants[0][0], 0) if variants else None
    pair_seconds = None
    for size in sorted(int(s) for s in _SIZES.value):
      report = speed(size, student or fast, fast if student else '', pair_seconds, slow)
      report['models'] = {'fast': fast, 'distilled': student}
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
  part['slow_models'] = {**results.get('slow_models', {}), **part.get('slow_models', {})}
  results.update(part, **({'sizes': [by_size[n] for n in sorted(by_size)]} if by_size else {}))
  files.write_json(out, results, indent=2)
  with files.atomic_file(out[:-len('.json')] + '.md') as f:
    f.write(fast_slow_report.table(results))
  if results.get('sizes'):
    fast_slow_report.plot(results, out[:-len('.json')] + '.png')
  print(fast_slow_report.table(results), flush=True)


if __name__ == '__main__':
  app.run(main)

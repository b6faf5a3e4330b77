r"""Mean pooling against the temporal transformer on the built-in video's near-duplicates.

  python -m benchmarks.video_temporal \
      [--runs=random:600,grouped:600,random:1500,random:1500+grouped:600,random:1500+grouped:1500/2] \
      [--root=/tmp/jaxret-video-temporal] [--finetune_lr=0.0003]

Trains (or reuses, when a workdir already holds its last checkpoint) under --root
one `configs/video.py` model per temporal modelling (`mean`, `transformer`) and
`--runs` entry:
- `<batches>:<steps>`: train batches of `random` clips or `grouped` (batches of
  whole near-duplicate groups, `groups=True`), for that many steps, in
  `<temporal>-<steps>[-grouped]`;
- stages joined by `+`, each starting from the last one's model (`init.workdir`,
  its tokenizer too) at --finetune_lr: `random:1500+grouped:600` is 1,500 steps
  on random clips, then 600 on groups, in `<temporal>-1500+600-grouped`;
- `/<seeds>` at the end: the last stage trained with `config.seed` 0, 1, ...
  (`-s<seed>` after its workdir's name from seed 1), every seed starting from
  the same earlier stages.

Then embeds the test split (100 groups of four temporal near-duplicates: 400
clips, 2,000 captions) with each and reports:

- text→video and video→text R@1/5/10 and median rank (`jaxret/evaluate/recall.py`:
  ties broken at random in expectation, so mean pooling, which gives a clip and
  its reversal the same embedding, gets half credit on them);
- `group/R@1`: the caption's top clip is one of its group's four (seeing the
  objects and events);
- `within_group/R@1`: among its own group's four clips, the caption's clip scores
  highest (seeing their order; chance 25%);
- per run, the transformer's lead over mean pooling, per seed and as mean ± std.

Writes benchmarks/results/video_temporal.{json,md} (--out).
"""

import os
import sys

from absl import app
from absl import flags
import numpy as np

from benchmarks import training
from jaxret import files
from jaxret.config import workdir as workdir_config
from jaxret.data import sources
from jaxret.evaluate import embed
from jaxret.evaluate import recall
from jaxret.evaluate import retrieval
from jaxret.inference import restore as restore_lib

TEMPORAL = ('mean', 'transformer')
BATCHES = ('random', 'grouped')

_RUNS = flags.DEFINE_list(
    'runs', ['random:600', 'grouped:600', 'random:1500', 'random:1500+grouped:600',
             'random:1500+grouped:1500/2'],
    'Pairs of models to compare, each <batches>:<steps> (batches: random or grouped), or '
    'stages joined by +, each fine-tuning the last; /<seeds> at the end: seeds of the last '
    'stage.')
_FINETUNE_LR = flags.DEFINE_float('finetune_lr', 3e-4, 'Peak learning rate of the stages '
                                  'after the first.')
_ROOT = flags.DEFINE_string('root', '/tmp/jaxret-video-temporal', 'Where the workdirs live.')
_OUT = flags.DEFINE_string('out', 'benchmarks/results/video_temporal.json', 'Results JSON.')


def parse_run(run):
  """`random:1500+grouped:600/2` -> ([('random', 1500), ('grouped', 600)], 2 seeds)."""
  run, _, seeds = run.partition('/')
  stages = [stage.split(':') for stage in run.split('+')]
  if (any(len(s) != 2 or s[0] not in BATCHES or not s[1].isdigit() for s in stages)
      or not (seeds or '1').isdigit() or int(seeds or '1') < 1):
    raise app.UsageError(f'--runs takes <batches>:<steps> entries joined by +, batches one '
                         f'of {", ".join(BATCHES)}, then optionally /<seeds>; got {run!r}')
  return [(batches, int(steps)) for batches, steps in stages], int(seeds or '1')


def train_stages(temporal, stages, seed):
  """Trains (or reuses) each stage's workdir in turn, the last one with `config.seed=seed`
  (the earlier ones with seed 0, shared by every seed); returns the last one's path."""
  name, previous = temporal, None
  for i, (batches, steps) in enumerate(stages):
    last = i == len(stages) - 1
    name += ('-' if i == 0 else '+') + str(steps)
    path = os.path.join(_ROOT.value, name + ('-grouped' if batches == 'grouped' else '')
                        + (f'-s{seed}' if last and seed else ''))
    overrides = [] if previous is None else [
        f'--config.init.workdir={previous}', f'--config.tokenizer.path={previous}',
        f'--config.optimizer.lr={_FINETUNE_LR.value}']
    overrides += [f'--config.seed={seed}'] if last and seed else []
    training.train(path, f'configs/video.py:temporal={temporal},groups={batches == "grouped"}',
                   steps, *overrides)
    previous = path
  return previous


def measure(path):
  """The test split's metrics of the workdir at `path`."""
  config = workdir_config.load(path)
  restored = restore_lib.restore(config, path)
  records = sources.load_split(config.data, 'test')
  embedder = embed.Embedder(restored.model, restored.mesh, config.eval.batch_size, config.data)
  clips, texts, text_ids, _ = retrieval.embed_split(embedder, restored.params, records,
                                                    restored.tokenizer)
  scores = np.asarray(texts, np.float32) @ np.asarray(clips, np.float32).T
  metrics = recall.metrics_from_scores(scores, records.image_ids, text_ids)
  metrics.update(recall.group_metrics(scores, recall.rows_of(records.image_ids, text_ids),
                                      records.groups))
  return {'step': restored.step, 'clips': len(records), 'captions': len(texts), **metrics}


def table(runs):
  lines = ['| batches | steps | seed | temporal | t2v R@1 | R@5 | R@10 | median rank | v2t R@1 | '
           'group R@1 | within group R@1 |', '|---|---|---|---|---|---|---|---|---|---|---|']
  for run in runs:
    lines.append('| {batches} | {steps} | {seed} | {temporal} | {r1:.1f} | {r5:.1f} | {r10:.1f} | '
                 '{med:g} | {v2t:.1f} | {group:.1f} | {within:.1f} |'.format(
                     **run, r1=100 * run['t2i/R@1'], r5=100 * run['t2i/R@5'],
                     r10=100 * run['t2i/R@10'], med=run['t2i/median_rank'],
                     v2t=100 * run['i2t/R@1'], group=100 * run['group/R@1'],
                     within=100 * run['within_group/R@1']))
  return '\n'.join(lines) + '\n'


def gaps(runs):
  """Per run and metric, the transformer's lead over mean pooling: per seed, and the mean
  and sample standard deviation over seeds."""
  out = []
  for key in dict.fromkeys((r['batches'], r['steps']) for r in runs):
    pairs = {}
    for r in runs:
      if (r['batches'], r['steps']) == key:
        pairs.setdefault(r['seed'], {})[r['temporal']] = r
    row = {'batches': key[0], 'steps': key[1], 'seeds': len(pairs)}
    for metric in ('t2i/R@1', 'within_group/R@1'):
      lead = [100 * (p['transformer'][metric] - p['mean'][metric]) for p in pairs.values()]
      row[metric] = {'per_seed': lead, 'mean': float(np.mean(lead)),
                     'std': float(np.std(lead, ddof=1)) if len(lead) > 1 else None}
    out.append(row)
  return out


def gap_table(rows):
  def cell(gap):
    spread = f' ± {gap["std"]:.1f}' if gap['std'] is not None else ''
    return f'{gap["mean"]:+.1f}{spread} ({", ".join(f"{g:+.1f}" for g in gap["per_seed"])})'
  lines = ['| batches | steps | seeds | transformer − mean, t2v R@1 | within group R@1 |',
           '|---|---|---|---|---|']
  lines += [f'| {r["batches"]} | {r["steps"]} | {r["seeds"]} | {cell(r["t2i/R@1"])} | '
            f'{cell(r["within_group/R@1"])} |' for r in rows]
  return '\n'.join(lines) + '\n'


def main(argv):
  del argv
  runs = []
  for run in _RUNS.value:
    stages, seeds = parse_run(run)
    for seed in range(seeds):
      for temporal in TEMPORAL:
        path = train_stages(temporal, stages, seed)
        runs.append({'batches': '+'.join(b for b, _ in stages),
                     'steps': '+'.join(str(n) for _, n in stages), 'seed': seed,
                     'temporal': temporal, 'workdir': path, **measure(path)})
        print(table(runs[-1:]), flush=True)
  results = {
      'what': 'configs/video.py, temporal=mean against temporal=transformer, on the built-in '
              'test gallery (100 groups of 4 temporal near-duplicates: 400 clips, 2,000 '
              'captions; chance R@1 0.25%, within a group 25%)',
      'command': ' '.join(['python -m benchmarks.video_temporal'] + sys.argv[1:]),
      'seeds': 'data.seed=0; config.seed of the last stage (the earlier stages: 0)',
      'finetune_lr': _FINETUNE_LR.value,
      'runs': runs, 'gaps': gaps(runs)}
  files.write_json(_OUT.value, results, indent=2)
  with files.atomic_file(_OUT.value[:-len('.json')] + '.md') as f:
    f.write(table(runs) + '\n' + gap_table(results['gaps']))
  print(table(runs) + '\n' + gap_table(results['gaps']), flush=True)


if __name__ == '__main__':
  app.run(main)

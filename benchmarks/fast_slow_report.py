"""The Fast and Slow study's report: its JSON (benchmarks/fast_slow.py) as a markdown
table and a log-log plot of R@1 against the time per query."""

import math


def table(results):
  """The parts that `results` holds, each as a table with its caption."""
  lines = speed_table(results.get('sizes', []))
  lines += slow_models_table(results.get('slow_models', {}), results.get('pair_costs'))
  if 'distillation' not in results:
    return joined(lines)
  distill, slow = results['distillation'], results.get('slow_models', {}).get('fine')
  lines += ['', f'Distillation: text→image R@1 over all test captions ({distill["gallery"]} '
            f'images; mean ± sample std over the seeds; gain: per seed, against Fast of '
            f'the same seed):', '',
            *DISTILL_HEADER, fast_row('Fast', distill['fast'])]
  lines += [variant_row('Fast distilled', v) for v in distill['variants']]
  if slow:
    lines.append('| Slow (exhaustive, fine pyramid) | | | | | | 1 | '
                 f'{100 * slow["t2i/R@1"]:.1f} | | |')
  lines += continued_table(distill.get('continued'))
  errors = distill['fast'].get('top1_errors')
  if errors:
    lines += ['', "Fast's top 1 over all test captions, per seed: R@1; the top image in the "
              "right image's group of near-duplicates (group@1); of the wrong top-1 images, "
              'the share that are near-duplicates of the right one:', '',
              '| seed | R@1 | group@1 | errors in the group |', '|---|---|---|---|']
    lines += [f'| {seed} | {100 * e["t2i/R@1"]:.1f} | {100 * e["group@1"]:.1f} | '
              f'{100 * e["errors_in_group"]:.0f}% |' for seed, e in zip(distill['seeds'], errors)]
  lines += ['', "The teacher's targets over B_i (|B_i| = 8; first training batches): top-1 = "
            "its own image ranked first, p(own), entropy of p (nats; uniform: 2.08):", '',
            '| batches | B_i | T | top-1 | p(own) | entropy |', '|---|---|---|---|---|---|']
  for targets in results['teacher_targets']:
    for key, row in targets['rows'].items():
      candidates, temperature = key.split('/T=')
      lines.append(f'| {"grouped" if targets["group_batches"] else "random"} | {candidates} '
                   f'| {temperature} | {row["top1"]:.2f} | {row["p_own"]:.2f} | '
                   f'{row["entropy"]:.2f} |')
  return joined(lines + negatives_table(results.get('teacher_negatives')))


def joined(lines):
  """The report's text: each part opens with a blank line, the first needs none."""
  return '\n'.join(lines).lstrip('\n') + '\n'


def speed_table(sizes):
  """The gallery-size sweep: each model's R@1/5/10 and time per query, and the slow
  features' storage and cost."""
  if not sizes:
    return []
  lines = ['', '| gallery | queries | model | K | R@1 | R@5 | R@10 | ms/query |',
           '|---|---|---|---|---|---|---|---|']
  for size in sizes:
    for row in size['rows']:
      lines.append(f'| {size["gallery"]:,} | {size["queries"]} | {row["name"]} | '
                   f'{row["k"] or ""} | ' + ' | '.join(
                       f'{100 * row[f"t2i/R@{k}"]:.1f}' for k in (1, 5, 10))
                   + f' | {row["query_ms"]:.1f} |')
  lines += ['', 'Slow features stored per image, and one query alone over 500 of them:', '',
            '| gallery | features | bytes per image | ms/query | µs/pair |',
            '|---|---|---|---|---|']
  for size in sizes:
    for kind, row in size['slow_storage'].items():
      lines.append(f'| {size["gallery"]:,} | {kind} | {row["bytes_per_image"]:,} | '
                   f'{row["query_ms"]:.1f} | {row["pair_us"]:.0f} |')
  return lines


def negatives_table(negatives):
  """What `loss.targets=negatives` asks of Fast: the teacher and the trained Fast model
  over B_i's negatives (`diagnostics.teacher_negatives`)."""
  if not negatives:
    return []
  lines = ['', f"The teacher (p, at T) and Fast ({negatives['fast']}, q) over B_i's "
           f"{negatives['num_candidates'] - 1} negatives (first training batches): the same "
           'top negative, Spearman rank correlation, H(p, q) and the entropy of p (nats; '
           f"uniform: {math.log(negatives['num_candidates'] - 1):.2f}):", '',
           '| B_i | T | same top | Spearman | H(p, q) | entropy of p |',
           '|---|---|---|---|---|---|']
  for key, row in negatives['rows'].items():
    candidates, temperature = key.split('/T=')
    lines.append(f'| {candidates} | {temperature} | {row["top_agree"]:.2f} | '
                 f'{row["spearman"]:.2f} | {row["cross_entropy"]:.2f} | {row["entropy"]:.2f} |')
  return lines


def continued_table(continued):
  """Fast and the students trained more steps from Fast's checkpoint, each gain against
  the continued Fast of the same seed."""
  if not continued:
    return []
  lines = ['', f'The longer regime: trained {continued["steps"]} more steps from Fast\'s '
           f'checkpoint ({continued["from_steps"]} steps), gain against Fast trained as many '
           'more steps:', '',
           *DISTILL_HEADER, fast_row('Fast, continued', continued['fast'])]
  return lines + [variant_row('Fast distilled, continued', v) for v in continued['variants']]


DISTILL_HEADER = ('| model | candidates | targets | \\|B_i\\| | T | α | seeds | R@1 | per seed | '
                  'gain over Fast |', '|---|---|---|---|---|---|---|---|---|---|')


def fast_row(name, fast):
  """Fast's row of a distillation table: R@1 as mean ± sample std, and per seed."""
  return (f'| {name} | | | | | | {len(fast["per_seed"])} | {points(fast["t2i/R@1"])} | '
          f'{per_seed(fast["per_seed"])} | |')


def variant_row(name, v):
  """A student's row: its settings, R@1 as in `fast_row` and its gain over Fast."""
  return (f'| {name} | {v["candidates"]} | {v["targets"]} | {v["num_candidates"] or "batch"} '
          f'| {v["temperature"]:g} | {v["alpha"]:g} | {len(v["seeds"])} | '
          f'{points(v["t2i/R@1"])} | {per_seed(v["per_seed"])} | '
          f'{points(v["gain_over_fast"], "+")} |')


def points(spread, sign=''):
  """A spread (benchmarks.fast_slow.spread) in points: mean ± std, or the mean alone
  where one seed leaves the std undefined."""
  mean = format(100 * spread['mean'], sign + '.1f')
  return mean if spread['std'] is None else f'{mean} ± {100 * spread["std"]:.1f}'


def per_seed(runs):
  return ', '.join(f'{100 * r["t2i/R@1"]:.1f}' for r in runs)


def slow_models_table(models, costs):
  """The slow-model ablation: each model's exhaustive Slow over all test captions, and
  the cost per pair of all of them timed side by side."""
  if not models:
    return []
  lines = ['', 'Slow models: exhaustive Slow over all test captions of the 500-image split '
           '(each its own run; µs/pair of that run), and the cost per pair timed side by '
           'side in one run' + (f' ({costs["queries"]} queries against {costs["gallery"]} '
                                f'images, median of {costs["turns"]} turns)' if costs else '')
           + ':', '',
           '| slow model | steps | captions | R@1 | R@5 | R@10 | µs/pair (its run) | '
           'µs/pair side by side | stored bytes per image |',
           '|---|---|---|---|---|---|---|---|---|']
  for name, row in models.items():
    side = costs['models'].get(name) if costs else None
    lines.append(f'| {name} | {row["steps"]} | {row["captions"]:,} | ' + ' | '.join(
        f'{100 * row[f"t2i/R@{k}"]:.1f}' for k in (1, 5, 10)) + f' | {row["pair_us"]:.0f} | '
                 + (f'{side["pair_us"]:.0f} | {side["bytes_per_image"]:,} |' if side
                    else '| |'))
  return lines


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

"""`--mode=eval`: Recall@K of a checkpoint on the held-out split, to `DIR/eval/results.json`."""

import os
import time

import jax

from jaxret import evaluate as evaluate_lib
from jaxret import files
from jaxret.data import sources
from jaxret.inference import restore as restore_lib


def write_json(path, payload):
  """Atomic JSON write (process 0 only): a reader never sees half a file."""
  if jax.process_index() != 0:
    return
  files.write_json(path, payload, indent=2, sort_keys=True)


def format_table(results):
  rows = ['| direction | R@1 | R@5 | R@10 | median rank |', '|---|---|---|---|---|']
  directions = (('i2i', 'image→image'), ('t2i', 'text→image'), ('i2t', 'image→text'))
  for name, label in directions:
    if f'{name}/R@1' not in results:  # i2i: only for eval.task='image_image'.
      continue
    median = results.get(f'{name}/median_rank')  # Not every evaluator ranks everything.
    rows.append(f'| {label} | ' + ' | '.join(
        f'{100 * results[f"{name}/R@{k}"]:.1f}' for k in (1, 5, 10))
                + (f' | {median:.0f} |' if median is not None else ' | |'))
  return '\n'.join(rows)


def evaluate(config, workdir, step=None):
  """Evaluates checkpoint `step` (default: latest) on `config.eval.split`."""
  start = time.time()
  restored = restore_lib.restore(config, workdir, step)
  records = sources.load_split(config.data, config.eval.split)
  output_dir = os.path.join(workdir, 'eval')
  evaluator = evaluate_lib.build(
      config.eval.evaluator, config, restored.model, restored.mesh,
      records, restored.tokenizer, config.eval.split, output_dir=output_dir)
  results = evaluator(restored.params)
  results.setdefault('num_texts', sum(len(c) for c in records.captions))
  results.update(step=restored.step, split=config.eval.split, num_images=len(records),
                 chance_t2i_R1=1 / len(records), seconds=time.time() - start)
  results.update(evaluator.summary())  # Counts of its own gallery (the image task's).
  write_json(os.path.join(output_dir, 'results.json'), results)
  return results

r"""Training-step time of every method config, side by side in one run.

  python -m benchmarks.methods [--methods=clip,siglip,irt,filip,albef,wenlan,caption] \
      [--rounds=10] [--out=benchmarks/results/methods_cpu.json]

Builds each config (`configs/<name>.py`, full size, not runlocal) on the built-in
data, compiles its `train_step`, then times one step of every method per
round, round after round, so that load on a noisy machine falls on all of them
alike. Prints the median step time and its ratio to the first method's.
`distill` needs a trained slow workdir: `--teacher=DIR`.
"""

import json
import pathlib
import time

from absl import app
from absl import flags
import jax
import numpy as np

from jaxret.config import config_file
from jaxret.data import pipeline
from jaxret.data import sources
from jaxret.data import tokenizer as tokenizer_lib
from jaxret.parallel import host
from jaxret.parallel import mesh as mesh_lib
from jaxret.train import setup

_METHODS = flags.DEFINE_list('methods', ['clip', 'siglip', 'irt', 'filip', 'albef', 'wenlan',
                                         'caption'], 'Config names under configs/.')
_ROUNDS = flags.DEFINE_integer('rounds', 10, 'Timed rounds (after one warm-up step each).')
_TEACHER = flags.DEFINE_string('teacher', None, 'Slow workdir, for the distill method.')
_OUT = flags.DEFINE_string('out', None, 'Also write the results as JSON here.')

REPO = pathlib.Path(__file__).resolve().parent.parent


def load_config(name):
  path = REPO / 'configs' / f'{name}.py'
  module = config_file.load(path)
  return module.get_config(f'slow={_TEACHER.value}' if name == 'distill' else None)


class Method:
  """One config's compiled step, its state and a real batch of the built-in data."""

  def __init__(self, name, records, tokenizer):
    self.name = name
    config = load_config(name)
    if name == 'distill':
      tokenizer = tokenizer_lib.load_workdir(_TEACHER.value, config.data.text_len)
    self.mesh = mesh_lib.make_mesh(config.mesh)
    trainable = setup.Trainable(config, tokenizer, self.mesh)
    self.state = trainable.init_state()
    self.step = trainable.compiled_step()
    dataset = pipeline.train_dataset(records, tokenizer, config.data, seed=config.seed,
                                     global_batch=config.batch_size)
    self.batch = host.to_global(dataset[0], self.mesh)
    self.batch_size = config.batch_size
    start = time.perf_counter()
    self.run()
    self.compile_seconds = time.perf_counter() - start
    self.run()
    self.times = []

  def run(self):
    self.state, metrics = self.step(self.state, self.batch)
    jax.block_until_ready(metrics)

  def timed(self):
    start = time.perf_counter()
    self.run()
    self.times.append(time.perf_counter() - start)


def main(argv):
  del argv
  first = load_config('demo')
  records = sources.load_split(first.data, 'train')
  tokenizer = tokenizer_lib.build_word_level(
      (t for caps in records.captions for t in caps), first.data.text_len)
  methods = [Method(name, records, tokenizer) for name in _METHODS.value]
  for _ in range(_ROUNDS.value):
    for method in methods:
      method.timed()
  base = float(np.median(methods[0].times))
  results = []
  print(f'{"method":<12}{"step s (median)":>16}{"ex/s":>8}{"x " + methods[0].name:>10}'
        f'{"compile s":>11}')
  for method in methods:
    seconds = float(np.median(method.times))
    results.append({'method': method.name, 'step_seconds_median': seconds,
                    'examples_per_sec': method.batch_size / seconds,
                    'ratio': seconds / base, 'compile_seconds': method.compile_seconds})
    print(f'{method.name:<12}{seconds:>16.3f}{method.batch_size / seconds:>8.1f}'
          f'{seconds / base:>10.2f}{method.compile_seconds:>11.1f}')
  if _OUT.value:
    with open(_OUT.value, 'w') as f:
      json.dump({'device': jax.devices()[0].device_kind, 'rounds': _ROUNDS.value,
                 'methods': results}, f, indent=2)


if __name__ == '__main__':
  app.run(main)

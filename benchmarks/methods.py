r"""Training-step time and compiled memory of every method config, side by side in one run.

  python -m benchmarks.methods [--methods=clip,siglip,irt,filip,albef,wenlan,caption,video] \
      [--rounds=10] [--runlocal] [--out=benchmarks/results/methods_cpu.json]

Builds each config (`configs/<name>.py`, full size; `--runlocal`: its tiny
smoke-run size) on its own built-in data (`video`: the built-in clips through
the video tower, `configs/video.py`), compiles its `train_step` ahead of time
for the real state and batch, then times one step of every method per round,
round after round, so that load on a noisy machine falls on all of them alike.
Prints the median step time, its ratio to the first method's, the compile time
and the compiled step's memory per device (XLA's memory analysis: temporary
buffers plus arguments, the state and the batch, `benchmarks/xla_memory.py`).
`distill` needs a trained slow workdir: `--teacher=DIR`.
"""

import pathlib
import time

from absl import app
from absl import flags
import jax
import numpy as np

from benchmarks import xla_memory
from jaxret import files
from jaxret.config import config_file
from jaxret.data import pipeline
from jaxret.data import sources
from jaxret.data import tokenizer as tokenizer_lib
from jaxret.parallel import host
from jaxret.parallel import mesh as mesh_lib
from jaxret.train import setup

_METHODS = flags.DEFINE_list('methods', ['clip', 'siglip', 'irt', 'filip', 'albef', 'wenlan',
                                         'caption', 'video'], 'Config names under configs/.')
_ROUNDS = flags.DEFINE_integer('rounds', 10, 'Timed rounds (after one warm-up step each).')
_RUNLOCAL = flags.DEFINE_bool('runlocal', False, "The configs' runlocal size (a smoke run).")
_TEACHER = flags.DEFINE_string('teacher', None, 'Slow workdir, for the distill method.')
_OUT = flags.DEFINE_string('out', None, 'Also write the results as JSON here.')

REPO = pathlib.Path(__file__).resolve().parent.parent
MIB = 2.0**20


def load_config(name):
  path = REPO / 'configs' / f'{name}.py'
  module = config_file.load(path)
  args = (['runlocal'] if _RUNLOCAL.value else []) + (
      [f'slow={_TEACHER.value}'] if name == 'distill' else [])
  return module.get_config(','.join(args) or None)


class Data:
  """Each config's training records and the tokenizer built from their captions, made once
  per distinct data config (the image methods share one, the video config has its own)."""

  def __init__(self):
    self._made = {}

  def __call__(self, data_config):
    key = data_config.to_json(sort_keys=True)
    if key not in self._made:
      records = sources.load_split(data_config, 'train')
      tokenizer = tokenizer_lib.build_word_level(
          (t for caps in records.captions for t in caps), data_config.text_len)
      self._made[key] = records, tokenizer
    return self._made[key]


class Method:
  """One config's compiled step, its state and a real batch of its built-in data."""

  def __init__(self, name, data):
    self.name = name
    config = load_config(name)
    records, tokenizer = data(config.data)
    if name == 'distill':
      tokenizer = tokenizer_lib.load_workdir(_TEACHER.value, config.data.text_len)
    self.mesh = mesh_lib.make_mesh(config.mesh)
    trainable = setup.Trainable(config, tokenizer, self.mesh)
    self.state = trainable.init_state()
    dataset = pipeline.train_dataset(records, tokenizer, config.data, seed=config.seed,
                                     global_batch=config.batch_size)
    self.batch = host.to_global(dataset[0], self.mesh)
    self.batch_size = config.batch_size
    start = time.perf_counter()
    self.step = trainable.compiled_step().lower(self.state, self.batch).compile()
    self.compile_seconds = time.perf_counter() - start
    self.memory = xla_memory.per_device(self.step)
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
  data = Data()
  methods = [Method(name, data) for name in _METHODS.value]
  for _ in range(_ROUNDS.value):
    for method in methods:
      method.timed()
  base = float(np.median(methods[0].times))
  results = []
  print(f'{"method":<12}{"step s (median)":>16}{"ex/s":>8}{"x " + methods[0].name:>10}'
        f'{"compile s":>11}{"peak MiB":>10}{"temp MiB":>10}')
  for method in methods:
    seconds = float(np.median(method.times))
    results.append({'method': method.name, 'step_seconds_median': seconds,
                    'step_seconds_min': float(np.min(method.times)),
                    'step_seconds_max': float(np.max(method.times)),
                    'examples_per_sec': method.batch_size / seconds,
                    'ratio': seconds / base, 'compile_seconds': method.compile_seconds,
                    **method.memory})
    print(f'{method.name:<12}{seconds:>16.3f}{method.batch_size / seconds:>8.1f}'
          f'{seconds / base:>10.2f}{method.compile_seconds:>11.1f}'
          f'{method.memory["peak_bytes_per_device"] / MIB:>10.1f}'
          f'{method.memory["temp_bytes_per_device"] / MIB:>10.1f}')
  if _OUT.value:
    files.write_json(_OUT.value, {
        'device': jax.devices()[0].device_kind, 'devices': len(jax.devices()),
        'rounds': _ROUNDS.value, 'runlocal': _RUNLOCAL.value, 'methods': results}, indent=2)


if __name__ == '__main__':
  app.run(main)

r"""Memory per device of the training step against the global batch, with gradient caching.

  python -m benchmarks.memory [--methods=clip,siglip,filip,irt,caption] \
      [--batches=512,1024,2048,4096,8192,16384] [--chunk=64] [--whole_up_to=16384] \
      [--timed_batch=1024] [--rounds=3] [--out_dir=benchmarks/results]

On 8 simulated CPU devices, compiles each method's `train_step`
(`configs/<name>.py:runlocal`, the tiny model) for every global batch B, with
`microbatches` M = B / (8 · chunk) so that each device's chunk stays `chunk`
rows, and also with M = 1 (the whole batch at once) up to `whole_up_to`. XLA's compiled memory
analysis gives, per device, the temporary bytes plus the argument bytes (the
state and the batch): `peak_bytes_per_device`. Compiling needs no memory for
the batch, so the large batches are compiled, not run. At `timed_batch`, the
M = 1 step and the fixed-chunk step are run side by side, round after round
(median of `rounds` after one warm-up each): `step_seconds` (null elsewhere).

Writes `memory.json` ({"methods": {name: [{global_batch, microbatches,
peak_bytes_per_device, temp_bytes_per_device, argument_bytes_per_device,
batch_bytes_per_device, step_seconds}, ...]}}), `memory.md` (a table) and
`memory.png` (a plot) under --out_dir.
"""

import os

# Simulated devices: set before JAX starts.
os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '')
                           + ' --xla_force_host_platform_device_count=8')

import io  # pylint: disable=wrong-import-position
import pathlib  # pylint: disable=wrong-import-position
import time  # pylint: disable=wrong-import-position

from absl import app  # pylint: disable=wrong-import-position
from absl import flags  # pylint: disable=wrong-import-position
import jax  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

from benchmarks import xla_memory  # pylint: disable=wrong-import-position
from jaxret import files  # pylint: disable=wrong-import-position
from jaxret.config import config_file  # pylint: disable=wrong-import-position
from jaxret.data import tokenizer as tokenizer_lib  # pylint: disable=wrong-import-position
from jaxret.parallel import host  # pylint: disable=wrong-import-position
from jaxret.parallel import mesh as mesh_lib  # pylint: disable=wrong-import-position
from jaxret.train import setup  # pylint: disable=wrong-import-position

_METHODS = flags.DEFINE_list('methods', ['clip', 'siglip', 'filip', 'irt', 'caption'],
                             'Config names under configs/ (compiled at runlocal size).')
_BATCHES = flags.DEFINE_list('batches', ['512', '1024', '2048', '4096', '8192', '16384'],
                             'Global batch sizes.')
_CHUNK = flags.DEFINE_integer('chunk', 64, 'Rows per device in each microbatch.')
_WHOLE_UP_TO = flags.DEFINE_integer('whole_up_to', 16384,
                                    'Also compile M = 1 at global batches up to this.')
_TIMED = flags.DEFINE_integer('timed_batch', 1024, 'The global batch whose steps are run.')
_ROUNDS = flags.DEFINE_integer('rounds', 3, 'Timed rounds (after one warm-up step each).')
_OUT_DIR = flags.DEFINE_string('out_dir', 'benchmarks/results', 'Where the results go.')

REPO = pathlib.Path(__file__).resolve().parent.parent
DEVICES = 8


def load_config(name, batch, microbatches):
  path = REPO / 'configs' / f'{name}.py'
  module = config_file.load(path)
  config = module.get_config('runlocal')
  config.batch_size, config.microbatches = batch, microbatches
  return config


def synthetic_batch(config, vocab_size, rng):
  size, length, batch = config.data.image_size, config.data.text_len, config.batch_size
  lengths = rng.integers(length // 2, length + 1, size=(batch, 1))
  return {
      'image': rng.normal(size=(batch, size, size, 3)).astype(np.float32),
      'text': rng.integers(5, vocab_size, size=(batch, length)).astype(np.int32),
      'text_mask': (np.arange(length)[None] < lengths).astype(np.int32),
      # Two captions per image, so the losses see positives off the diagonal.
      'image_id': np.arange(batch, dtype=np.int32) // 2,
  }


class Step:
  """One method's step at one (global batch, M), compiled for abstract inputs."""

  def __init__(self, name, batch, microbatches, tokenizer, mesh):
    self.config = load_config(name, batch, microbatches)
    self.trainable = setup.Trainable(self.config, tokenizer, mesh)
    self.mesh = mesh
    self.vocab_size = tokenizer.vocab_size
    self.step = self.trainable.compiled_step()
    sharding = mesh_lib.batch_sharding(mesh)
    self.batch_shapes = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
        jax.eval_shape(lambda: synthetic_batch(self.config, self.vocab_size,
                                               np.random.default_rng(0))))
    self.compiled = self.step.lower(self.trainable.restore_target(), self.batch_shapes).compile()

  def memory(self):
    batch_bytes = sum(s.size * s.dtype.itemsize for s in jax.tree.leaves(self.batch_shapes))
    return {**xla_memory.per_device(self.compiled),
            'batch_bytes_per_device': int(batch_bytes // DEVICES)}

  def runner(self):
    """A function running one step (the state carried along), for timing."""
    state = self.trainable.init_state()
    batch = host.to_global(synthetic_batch(self.config, self.vocab_size,
                                           np.random.default_rng(0)), self.mesh)
    holder = {'state': state}

    def run():
      holder['state'], metrics = self.compiled(holder['state'], batch)
      jax.block_until_ready(metrics)

    return run


def time_side_by_side(runners, rounds):
  """Median seconds of each runner, one step of each per round after a warm-up."""
  for run in runners:
    run()
  times = [[] for _ in runners]
  for _ in range(rounds):
    for run, seconds in zip(runners, times):
      start = time.perf_counter()
      run()
      seconds.append(time.perf_counter() - start)
  return [float(np.median(seconds)) for seconds in times]


def measure(name, batches, tokenizer, mesh):
  """Entries of one method: the fixed-chunk M and M = 1 at every batch."""
  entries, timed = [], {}
  for batch in batches:
    fixed = max(1, batch // (DEVICES * _CHUNK.value))
    whole = {1} if batch <= _WHOLE_UP_TO.value else set()
    for microbatches in sorted(whole | {fixed}):
      start = time.perf_counter()
      step = Step(name, batch, microbatches, tokenizer, mesh)
      entry = {'global_batch': batch, 'microbatches': microbatches, **step.memory(),
               'compile_seconds': time.perf_counter() - start, 'step_seconds': None}
      print(name, entry, flush=True)
      entries.append(entry)
      if batch == _TIMED.value:
        timed[microbatches] = (entry, step.runner())
  if timed:
    seconds = time_side_by_side([run for _, run in timed.values()], _ROUNDS.value)
    for (entry, _), value in zip(timed.values(), seconds):
      entry['step_seconds'] = value
  return entries


def table(results):
  lines = ['| method | global batch | M | peak MiB/device | temp MiB | batch MiB | step s |',
           '|---|---:|---:|---:|---:|---:|---:|']
  mib = 2.0**20
  for name, entries in results['methods'].items():
    for e in entries:
      seconds = '' if e['step_seconds'] is None else f"{e['step_seconds']:.3f}"
      lines.append(f"| {name} | {e['global_batch']} | {e['microbatches']} | "
                   f"{e['peak_bytes_per_device'] / mib:.1f} | "
                   f"{e['temp_bytes_per_device'] / mib:.1f} | "
                   f"{e['batch_bytes_per_device'] / mib:.1f} | {seconds} |")
  return '\n'.join(lines) + '\n'


def plot(results):
  """PNG bytes: peak memory per device against the global batch, M = 1 and fixed chunk."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use('Agg')
  from matplotlib import pyplot  # pylint: disable=import-outside-toplevel
  figure, axes = pyplot.subplots(figsize=(7, 4.5))
  mib = 2.0**20
  for name, entries in results['methods'].items():
    whole = [(e['global_batch'], e['peak_bytes_per_device'] / mib) for e in entries
             if e['microbatches'] == 1]
    chunked = {}
    for e in entries:  # The largest M at each batch: the fixed chunk.
      chunked[e['global_batch']] = e['peak_bytes_per_device'] / mib
    line, = axes.plot(*zip(*whole), '--', marker='o', label=f'{name}, M = 1')
    axes.plot(*zip(*sorted(chunked.items())), '-', marker='o', color=line.get_color(),
              label=f'{name}, fixed chunk')
  axes.set_xscale('log', base=2)
  axes.set_yscale('log')
  axes.set_xlabel('global batch (8 devices)')
  axes.set_ylabel('peak MiB per device (XLA temp + arguments)')
  axes.legend(fontsize=7)
  figure.tight_layout()
  buffer = io.BytesIO()
  figure.savefig(buffer, format='png', dpi=120)
  return buffer.getvalue()


def main(argv):
  del argv
  mesh = mesh_lib.make_mesh(devices=jax.devices()[:DEVICES])
  words = [f'w{i}' for i in range(64)]
  batches = [int(b) for b in _BATCHES.value]
  results = {'devices': DEVICES, 'device': jax.devices()[0].device_kind,
             'chunk_rows_per_device': _CHUNK.value, 'timed_batch': _TIMED.value,
             'whole_up_to': _WHOLE_UP_TO.value,
             'rounds': _ROUNDS.value, 'model': 'configs/<method>.py:runlocal', 'methods': {}}
  for name in _METHODS.value:
    config = load_config(name, batches[0], 1)
    tokenizer = tokenizer_lib.build_word_level(words, config.data.text_len)
    results['methods'][name] = measure(name, batches, tokenizer, mesh)
  out_dir = pathlib.Path(_OUT_DIR.value)
  files.write_json(out_dir / 'memory.json', results, indent=2)
  markdown = table(results)
  with files.atomic_file(out_dir / 'memory.md') as f:
    f.write(markdown)
  files.write_bytes(out_dir / 'memory.png', plot(results))
  print(markdown)


if __name__ == '__main__':
  app.run(main)

r"""Memory per device of the training step against the global batch, with gradient caching.

  python -m benchmarks.memory [--methods=clip,siglip,filip,irt,caption] \
      [--batches=512,1024,2048,4096,8192,16384] [--chunk=64] [--whole_up_to=16384] \
      [--timed_batch=1024] [--rounds=3] [--out_dir=benchmarks/results]
  python -m benchmarks.memory --model=base --methods=clip,siglip,wenlan,irt \
      --batches=1024,2048,4096,8192,16384 --whole_up_to=0     # compiled only

On 8 simulated CPU devices, compiles each method's `train_step` for every
global batch B, with `microbatches` M = B / (8 · chunk) so that each device's
chunk stays `chunk` rows, and also with M = 1 (the whole batch at once) up to
`whole_up_to`. `--model=runlocal` is `configs/<name>.py:runlocal` (the tiny
model); `--model=base` gives a pooled dual encoder (clip, siglip, wenlan, irt)
the sizes of configs/clip_b16.py: ViT-B/16 at 224 px, a 12-layer 512-wide text tower, a
49,408-token vocabulary, bf16 compute, scanned layers (`--remat` picks the
remat policy). A queue or memory is given the largest batch's size at every
batch. XLA's compiled memory analysis gives, per device, the temporary
bytes plus the argument bytes (the state and the batch):
`peak_bytes_per_device`. Compiling needs no memory for the batch, so the large
batches are compiled, not run. At `timed_batch` (runlocal only), the M = 1 step
and the fixed-chunk step are run side by side, round after round (median of
`rounds` after one warm-up each): `step_seconds`, wall-clock, and
`step_cpu_seconds`, the process's CPU time over all threads (null elsewhere);
every round's seconds and the machine's load average are kept.

Writes `memory.json` ({"methods": {name: [{model, global_batch, microbatches,
peak_bytes_per_device, temp_bytes_per_device, argument_bytes_per_device,
batch_bytes_per_device, step_seconds}, ...]}, "growth": {name: {model: peak at
the largest batch / peak at 1,024, both with the fixed chunk}}}), `memory.md`
(a table) and `memory.png` (a plot) under --out_dir. Rows already in
memory.json are kept, except those measured again (same method, model, batch
and M), which are replaced.
"""

import os

# Simulated devices: set before JAX starts.
os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '')
                           + ' --xla_force_host_platform_device_count=8')

import io  # pylint: disable=wrong-import-position
import json  # pylint: disable=wrong-import-position
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
_MODEL = flags.DEFINE_enum('model', 'runlocal', ['runlocal', 'base'],
                           'Model size: the configs\' runlocal model, or ViT-B/16 sizes '
                           '(compiled only).')
_REMAT = flags.DEFINE_enum('remat', 'none', ['none', 'full', 'dots', 'dots_saveable'],
                           'Remat policy of the base model.')

REPO = pathlib.Path(__file__).resolve().parent.parent
DEVICES = 8
# The base model: configs/clip_b16.py's sizes and CLIP's BPE vocabulary size.
BASE_CONFIG = 'clip_b16'
BASE_METHODS = ('clip', 'siglip', 'wenlan', 'irt')
BASE_VOCAB = 49_408
# The batch that growth is measured from (the goal: at most 1.25x up to 16,384).
GROWTH_FROM = 1024


def model_label():
  """The rows' `model`: 'runlocal', 'base', or 'base, remat POLICY'."""
  if _MODEL.value == 'base' and _REMAT.value != 'none':
    return f'base, remat {_REMAT.value}'
  return _MODEL.value


def load_config(name, batch, microbatches):
  """`configs/<name>.py:runlocal`, or with --model=base its model and input sizes replaced
  by configs/clip_b16.py's (scanned layers, the --remat policy)."""
  config = config_file.load(REPO / 'configs' / f'{name}.py').get_config('runlocal')
  if _MODEL.value == 'base':
    base = config_file.load(REPO / 'configs' / f'{BASE_CONFIG}.py').get_config()
    config.data.image_size, config.data.text_len = base.data.image_size, base.data.text_len
    for key in ('image', 'text', 'embed_dim', 'dtype'):
      config.model[key] = base.model[key]
    config.model.scan_layers, config.model.remat_policy = True, _REMAT.value
  config.batch_size, config.microbatches = batch, microbatches
  # Queues and memories (a multiple of the global batch): the largest batch's size at
  # every batch, so that the state is the same size along a method's rows.
  for key in ('queue_size', 'memory_size'):
    if config.loss.get(key):
      config.loss[key] = max(int(b) for b in _BATCHES.value)
  return config


def build_tokenizer(config):
  words = 64 if _MODEL.value == 'runlocal' else BASE_VOCAB - len(tokenizer_lib.SPECIAL_TOKENS)
  return tokenizer_lib.build_word_level([f'w{i}' for i in range(words)], config.data.text_len)


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


def batch_shapes(config, sharding):
  """`synthetic_batch`'s shapes and dtypes, sharded like the batch (no data is made)."""
  size, length, batch = config.data.image_size, config.data.text_len, config.batch_size
  shapes = {'image': ((batch, size, size, 3), np.float32), 'text': ((batch, length), np.int32),
            'text_mask': ((batch, length), np.int32), 'image_id': ((batch,), np.int32)}
  return {key: jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)
          for key, (shape, dtype) in shapes.items()}


class Step:
  """One method's step at one (global batch, M), compiled for abstract inputs."""

  def __init__(self, name, batch, microbatches, tokenizer, mesh):
    self.config = load_config(name, batch, microbatches)
    self.trainable = setup.Trainable(self.config, tokenizer, mesh)
    self.mesh = mesh
    self.vocab_size = tokenizer.vocab_size
    self.step = self.trainable.compiled_step()
    self.batch_shapes = batch_shapes(self.config, mesh_lib.batch_sharding(mesh))
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
  """Wall-clock and process CPU seconds of every round of each runner, one step of each per
  round after a warm-up. CPU seconds (all threads) vary less than wall-clock seconds on
  a machine other jobs share."""
  for run in runners:
    run()
  times = [{'wall': [], 'cpu': []} for _ in runners]
  for _ in range(rounds):
    for run, seconds in zip(runners, times):
      wall, cpu = time.perf_counter(), time.process_time()
      run()
      seconds['wall'].append(time.perf_counter() - wall)
      seconds['cpu'].append(time.process_time() - cpu)
  return times


def measure(name, batches, tokenizer, mesh):
  """Entries of one method: the fixed-chunk M and M = 1 at every batch."""
  entries, timed = [], {}
  for batch in batches:
    fixed = max(1, batch // (DEVICES * _CHUNK.value))
    whole = {1} if batch <= _WHOLE_UP_TO.value else set()
    for microbatches in sorted(whole | {fixed}):
      start = time.perf_counter()
      step = Step(name, batch, microbatches, tokenizer, mesh)
      entry = {'model': model_label(), 'global_batch': batch, 'microbatches': microbatches,
               'chunk_rows_per_device': batch // (DEVICES * microbatches), **step.memory(),
               'compile_seconds': time.perf_counter() - start, 'step_seconds': None}
      print(name, entry, flush=True)
      entries.append(entry)
      if batch == _TIMED.value and _MODEL.value == 'runlocal':
        timed[microbatches] = (entry, step.runner())
  if timed:
    load_before = os.getloadavg()
    rounds = time_side_by_side([run for _, run in timed.values()], _ROUNDS.value)
    for (entry, _), seconds in zip(timed.values(), rounds):
      entry['step_seconds'] = float(np.median(seconds['wall']))
      entry['step_seconds_rounds'] = seconds['wall']
      entry['step_cpu_seconds'] = float(np.median(seconds['cpu']))
      entry['step_cpu_seconds_rounds'] = seconds['cpu']
      # The machine's 1-minute load average before and after: other jobs share the CPU.
      entry['load_average'] = [load_before[0], os.getloadavg()[0]]
  return entries


def growth(entries):
  """{model: peak and temp at the largest batch / at GROWTH_FROM}, both with the fixed chunk
  (the largest M at each batch)."""
  ratios = {}
  for model in dict.fromkeys(e['model'] for e in entries):
    rows = sorted((e for e in entries if e['model'] == model), key=lambda e: e['microbatches'])
    fixed = {e['global_batch']: e for e in rows}
    largest = max(fixed)
    if GROWTH_FROM in fixed and largest > GROWTH_FROM:
      ratios[model] = {'from': GROWTH_FROM, 'to': largest, **{
          f'{what}_ratio': (fixed[largest][f'{what}_bytes_per_device']
                            / fixed[GROWTH_FROM][f'{what}_bytes_per_device'])
          for what in ('peak', 'temp')}}
  return ratios


def merged(previous, measured):
  """`previous` results' rows, those measured again (same method, model, batch and M)
  replaced."""
  def key(entry):
    return entry['model'], entry['global_batch'], entry['microbatches']

  methods = {name: list(entries) for name, entries in previous.get('methods', {}).items()}
  for name, entries in measured.items():
    again = {key(e) for e in entries}
    methods[name] = sorted([e for e in methods.get(name, []) if key(e) not in again] + entries,
                           key=lambda e: (e['model'] != 'runlocal', e['model'],
                                          e['global_batch'], e['microbatches']))
  return {'devices': DEVICES, 'device': jax.devices()[0].device_kind, 'methods': methods,
          'growth': {name: growth(entries) for name, entries in methods.items()}}


def table(results):
  mib = 2.0**20
  lines = ['| method | model | global batch | M | peak MiB/device | temp MiB | batch MiB '
           '| step s | step CPU s |', '|---|---|---:|---:|---:|---:|---:|---:|---:|']
  for name, entries in results['methods'].items():
    for e in entries:
      seconds = ('| | |' if e['step_seconds'] is None
                 else f"| {e['step_seconds']:.3f} | {e['step_cpu_seconds']:.3f} |")
      lines.append(f"| {name} | {e['model']} | {e['global_batch']} | {e['microbatches']} | "
                   f"{e['peak_bytes_per_device'] / mib:.1f} | "
                   f"{e['temp_bytes_per_device'] / mib:.1f} | "
                   f"{e['batch_bytes_per_device'] / mib:.1f} {seconds}")
  lines += ['', '| method | model | peak growth | temp growth | (fixed chunk, batch from → to) |',
            '|---|---|---:|---:|---|']
  for name, ratios in results['growth'].items():
    for model, r in ratios.items():
      lines.append(f"| {name} | {model} | {r['peak_ratio']:.2f}x | {r['temp_ratio']:.2f}x | "
                   f"{r['from']} → {r['to']} |")
  return '\n'.join(lines) + '\n'


def plot(results):
  """PNG bytes: peak memory per device against the global batch, M = 1 and fixed chunk."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use('Agg')
  from matplotlib import pyplot  # pylint: disable=import-outside-toplevel
  figure, axes = pyplot.subplots(figsize=(9, 4.5))
  mib = 2.0**20
  for name, entries in results['methods'].items():
    for model in dict.fromkeys(e['model'] for e in entries):
      rows = [e for e in entries if e['model'] == model]
      whole = [(e['global_batch'], e['peak_bytes_per_device'] / mib) for e in rows
               if e['microbatches'] == 1]
      chunked = {}
      for e in sorted(rows, key=lambda e: e['microbatches']):  # The largest M: the fixed chunk.
        chunked[e['global_batch']] = e['peak_bytes_per_device'] / mib
      line, = axes.plot(*zip(*sorted(chunked.items())), '-', marker='o',
                        label=f'{name} ({model}), fixed chunk')
      if whole:
        axes.plot(*zip(*whole), '--', marker='o', color=line.get_color(),
                  label=f'{name} ({model}), M = 1')
  axes.set_xscale('log', base=2)
  axes.set_yscale('log')
  axes.set_xlabel('global batch (8 devices)')
  axes.set_ylabel('peak MiB per device (XLA temp + arguments)')
  axes.legend(fontsize=7, loc='upper left', bbox_to_anchor=(1.01, 1.0))
  figure.tight_layout()
  buffer = io.BytesIO()
  figure.savefig(buffer, format='png', dpi=120)
  return buffer.getvalue()


def main(argv):
  del argv
  mesh = mesh_lib.make_mesh(devices=jax.devices()[:DEVICES])
  batches = [int(b) for b in _BATCHES.value]
  if _MODEL.value == 'base' and set(_METHODS.value) - set(BASE_METHODS):
    raise app.UsageError(f'--model=base is for the pooled dual encoders '
                         f'({", ".join(BASE_METHODS)}), not {", ".join(_METHODS.value)}')
  measured = {}
  for name in _METHODS.value:
    tokenizer = build_tokenizer(load_config(name, batches[0], 1))
    measured[name] = measure(name, batches, tokenizer, mesh)
  out_dir = pathlib.Path(_OUT_DIR.value)
  path = out_dir / 'memory.json'
  results = merged(json.loads(path.read_text()) if path.exists() else {}, measured)
  files.write_json(path, results, indent=2)
  markdown = table(results)
  with files.atomic_file(out_dir / 'memory.md') as f:
    f.write(markdown)
  files.write_bytes(out_dir / 'memory.png', plot(results))
  print(markdown)


if __name__ == '__main__':
  app.run(main)

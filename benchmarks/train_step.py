r"""Training-step throughput and model-FLOPs utilisation (MFU) of a config.

  python -m benchmarks.train_step --config=configs/demo.py [--config.batch_size=256] \
      [--peak_tflops=989] [--steps=20]

Times the compiled `train_step` on synthetic batches (the input pipeline is
measured separately), and prints examples/s, examples/s per device, model
TFLOP/s (FLOPs from the model's configuration, `jaxret/models/flops.py`) and MFU
against --peak_tflops, else the device kind's known dense bf16 peak, else (on
CPU) a measured float32 matmul peak.
"""

import json
import time

from absl import app
from absl import flags
from ml_collections import config_flags
import jax
import jax.numpy as jnp
import numpy as np

from jaxret.data import options as data_options
from jaxret.data import tokenizer as tokenizer_lib
from jaxret.models import flops as flops_lib
from jaxret.parallel import host
from jaxret.parallel import mesh as mesh_lib
from jaxret.train import setup

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/demo.py', lock_config=True)
_STEPS = flags.DEFINE_integer('steps', 10, 'Timed steps (after 2 warm-up steps).')
_PEAK = flags.DEFINE_float('peak_tflops', None, 'Peak TFLOP/s of one device.')
_VOCAB = flags.DEFINE_integer('vocab_size', 0, 'Vocabulary size (0: a tiny synthetic one).')
_OUT = flags.DEFINE_string('out', None, 'Also write the results as JSON here.')

# Dense bf16 peak TFLOP/s per device, by device kind prefix.
PEAK_BF16_TFLOPS = {
    'NVIDIA H100': 989.0, 'NVIDIA H200': 989.0, 'NVIDIA A100': 312.0,
    'TPU v4': 275.0, 'TPU v5 lite': 197.0, 'TPU v5p': 459.0, 'TPU v6 lite': 918.0,
}


def matmul_peak_tflops(size=2048, repeats=10):
  """Measured float32 matmul throughput of one device (the CPU fallback)."""
  a = jnp.ones((size, size), jnp.float32)
  matmul = jax.jit(lambda x: x @ x)
  matmul(a).block_until_ready()
  start = time.perf_counter()
  for _ in range(repeats):
    matmul(a).block_until_ready()
  return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e12


def peak_tflops(device):
  if _PEAK.value:
    return _PEAK.value, 'given'
  for prefix, peak in PEAK_BF16_TFLOPS.items():
    if device.device_kind.startswith(prefix):
      return peak, f'{prefix} dense bf16'
  return matmul_peak_tflops(), 'measured f32 matmul'


def synthetic_batch(config, vocab_size, rng):
  size, length, batch = config.data.image_size, config.data.text_len, config.batch_size
  lengths = rng.integers(length // 2, length + 1, size=(batch, 1))
  return {
      'image': rng.normal(size=(batch, size, size, 3)).astype(np.float32),
      'text': rng.integers(5, vocab_size, size=(batch, length)).astype(np.int32),
      'text_mask': (np.arange(length)[None] < lengths).astype(np.int32),
      'image_id': np.arange(batch, dtype=np.int32),
  }


def main(argv):
  del argv
  config = _CONFIG.value
  words = [f'w{i}' for i in range(max(_VOCAB.value - len(tokenizer_lib.SPECIAL_TOKENS), 64))]
  tokenizer = tokenizer_lib.build_word_level(words, config.data.text_len)
  mesh = mesh_lib.make_mesh(config.mesh)
  mesh_lib.check_global_batch(config.batch_size, mesh)
  trainable = setup.Trainable(config, tokenizer, mesh)
  state = trainable.init_state()
  step = trainable.compiled_step()
  batch = host.to_global(synthetic_batch(config, tokenizer.vocab_size,
                                         np.random.default_rng(0)), mesh)
  start = time.perf_counter()
  state, metrics = step(state, batch)
  jax.block_until_ready(metrics)
  compile_seconds = time.perf_counter() - start
  state, metrics = step(state, batch)
  jax.block_until_ready(metrics)
  times = []
  for _ in range(_STEPS.value):
    start = time.perf_counter()
    state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - start)
  seconds = float(np.median(times))
  devices = mesh.devices.size
  example_flops = flops_lib.dual_encoder_train_flops(
      config.model, config.data.image_size, config.data.text_len,
      data_options.resolve(config.data).num_frames)
  peak, peak_source = peak_tflops(jax.devices()[0])
  achieved = example_flops * config.batch_size / seconds / devices / 1e12
  results = {
      'device': jax.devices()[0].device_kind, 'devices': devices,
      'global_batch': config.batch_size, 'dtype': config.model.dtype,
      'step_seconds_median': seconds, 'step_seconds_min': float(np.min(times)),
      'compile_seconds': compile_seconds,
      'examples_per_sec': config.batch_size / seconds,
      'examples_per_sec_per_device': config.batch_size / seconds / devices,
      'model_gflops_per_example': example_flops / 1e9,
      'model_tflops_per_sec_per_device': achieved,
      'peak_tflops_per_device': peak, 'peak_source': peak_source, 'mfu': achieved / peak,
  }
  print(json.dumps(results, indent=2))
  if _OUT.value:
    with open(_OUT.value, 'w') as f:
      json.dump(results, f, indent=2)


if __name__ == '__main__':
  app.run(main)

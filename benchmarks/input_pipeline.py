r"""Input pipeline throughput (images/s) next to the model's training step rate.

  python benchmarks/input_pipeline.py                      # pipeline only, 224 px
  python benchmarks/input_pipeline.py --image_size=64 --model_config=configs/demo.py

Writes `--images` photo-like JPEGs (500x375, the typical COCO / Flickr30K
size) with captions in the Karpathy layout to a temporary folder, then times
the real training pipeline on them (`jaxret.data.pipeline`: read, decode,
random-resized crop, normalise, tokenise, batch, prefetch, in `--threads`
threads) after one warm-up batch. With `--model_config`, it also times the
compiled train step of that config's model on random batches of the same
size on the available devices, so the two rates can be compared.
"""

import argparse
import atexit
import importlib
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=wrong-import-position
from jaxret.data import options as data_options
from jaxret.data import pipeline
from jaxret.data import sources
from jaxret.data import tokenizer as tokenizer_lib

WORDS = ('a man woman dog cat riding sitting on the beach street with red blue green small '
         'large two people in front of a building playing ball grass table food plate').split()


def photo_like(rng, width=500, height=375):
  """Smooth colour fields plus a few shapes and mild noise: JPEG-compresses like a photo."""
  coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
  image = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC),
                     np.int16)
  for _ in range(4):
    top, left = int(rng.integers(0, height - 60)), int(rng.integers(0, width - 60))
    image[top:top + int(rng.integers(20, 120)), left:left + int(rng.integers(20, 160))] = (
        rng.integers(0, 256, 3))
  image += rng.integers(-12, 13, image.shape, dtype=np.int16)
  return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))


def write_dataset(root, count, seed=0):
  rng = np.random.default_rng(seed)
  os.makedirs(os.path.join(root, 'images'), exist_ok=True)
  entries, total_bytes = [], 0
  for index in range(count):
    path = os.path.join(root, 'images', f'{index:06d}.jpg')
    photo_like(rng).save(path, format='JPEG', quality=90)
    total_bytes += os.path.getsize(path)
    sentences = [{'raw': ' '.join(rng.choice(WORDS, int(rng.integers(8, 16))))}
                 for _ in range(5)]
    entries.append({'filename': f'{index:06d}.jpg', 'filepath': 'images', 'imgid': index,
                    'split': 'train', 'sentences': sentences})
  path = os.path.join(root, 'dataset_bench.json')
  with open(path, 'w') as f:
    json.dump({'images': entries}, f)
  return path, total_bytes / count


def time_pipeline(args, json_path):
  config = data_options.defaults()
  config.update(dict(source='karpathy', path=json_path, image_size=args.image_size,
                     train_crop=args.crop, num_threads=args.threads, prefetch=2,
                     image_mean=(0.5, 0.5, 0.5), image_std=(0.5, 0.5, 0.5)))
  records = sources.load_split(config, 'train')
  tokenizer = tokenizer_lib.build_word_level((c for caps in records.captions for c in caps),
                                             args.text_len)
  dataset = pipeline.train_dataset(records, tokenizer, config, seed=0, global_batch=args.batch)
  iterator = pipeline.train_iterator(dataset, config)
  next(iterator)  # Warm-up: threads started, files cached.
  start = time.perf_counter()
  for _ in range(args.batches):
    next(iterator)
  rate = args.batches * args.batch / (time.perf_counter() - start)
  return rate


def time_model(args):
  # pylint: disable=import-outside-toplevel
  import jax
  from jaxret.parallel import host
  from jaxret.parallel import mesh as mesh_lib
  from jaxret.train import setup
  path, _, config_arg = args.model_config.partition(':')
  spec = importlib.util.spec_from_file_location('bench_config', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(config_arg or None)
  config.batch_size = args.batch
  config.data.image_size = args.image_size
  config.data.text_len = args.text_len

  class Vocabulary:
    vocab_size = 30522

  mesh = mesh_lib.make_mesh()
  trainable = setup.Trainable(config, Vocabulary(), mesh)
  state = trainable.init_state()
  step = trainable.compiled_step()
  rng = np.random.default_rng(0)
  batch = host.to_global({
      'image': rng.standard_normal((args.batch, args.image_size, args.image_size, 3),
                                   np.float32),
      'text': rng.integers(5, 1000, (args.batch, args.text_len)).astype(np.int32),
      'text_mask': np.ones((args.batch, args.text_len), np.int32),
      'image_id': np.arange(args.batch, dtype=np.int32)}, mesh)
  state, metrics = step(state, batch)  # Compile.
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for _ in range(args.model_steps):
    state, metrics = step(state, batch)
  jax.block_until_ready(metrics)
  seconds = (time.perf_counter() - start) / args.model_steps
  return seconds, jax.devices()[0].device_kind, len(jax.devices())


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--images', type=int, default=512)
  parser.add_argument('--image_size', type=int, default=224)
  parser.add_argument('--crop', default='random_resized', choices=data_options.TRAIN_CROPS)
  parser.add_argument('--batch', type=int, default=64)
  parser.add_argument('--batches', type=int, default=20)
  parser.add_argument('--threads', type=int, default=2)
  parser.add_argument('--text_len', type=int, default=32)
  parser.add_argument('--model_config', default='',
                      help='e.g. configs/demo.py or configs/real_data.py:variant=B/16')
  parser.add_argument('--model_steps', type=int, default=5)
  args = parser.parse_args()
  root = tempfile.mkdtemp()
  # Removed at exit, after the prefetch threads have stopped.
  atexit.register(shutil.rmtree, root, True)
  json_path, mean_bytes = write_dataset(root, args.images)
  rate = time_pipeline(args, json_path)
  print(f'pipeline: {rate:.0f} images/s ({args.threads} threads, {os.cpu_count()} CPUs; '
        f'{args.images} JPEGs of 500x375, {mean_bytes / 1024:.0f} KiB each; '
        f'{args.crop} crop to {args.image_size}px; batch {args.batch})')
  if args.model_config:
    seconds, kind, count = time_model(args)
    print(f'model: {1 / seconds:.2f} steps/s = {args.batch / seconds:.0f} images/s '
          f'({args.model_config}, batch {args.batch}, {args.image_size}px, {count} x {kind})')
    print(f'the pipeline feeds {rate * seconds / args.batch:.1f}x what the step consumes')


if __name__ == '__main__':
  main()

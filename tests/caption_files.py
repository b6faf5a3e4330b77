"""Small caption datasets written to disk in the real formats (Karpathy JSON + folder,
webdataset shards), with known bad records, for the data tests."""

import io
import json
import os

import numpy as np
from PIL import Image
import webdataset

COLOURS = {'red': (220, 30, 30), 'green': (30, 180, 60), 'blue': (40, 60, 220),
           'yellow': (230, 210, 40)}


def make_image(index, fmt='PNG'):
  """A (height, width) image of varying size: a coloured rectangle on grey; its caption."""
  rng = np.random.default_rng(index)
  height, width = int(rng.integers(40, 90)), int(rng.integers(40, 90))
  array = np.full((height, width, 3), 128, np.uint8)
  name = list(COLOURS)[index % len(COLOURS)]
  top, left = int(rng.integers(0, height // 2)), int(rng.integers(0, width // 2))
  array[top:top + height // 2, left:left + width // 2] = COLOURS[name]
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format=fmt)
  return array, buffer.getvalue(), [f'a {name} box number {index}', f'{name} rectangle {index}']


def write_karpathy(root, counts=(('train', 12), ('restval', 4), ('val', 6), ('test', 6))):
  """dataset_test.json + images/; returns (json path, {kind: expected count})."""
  images_dir = os.path.join(root, 'images')
  os.makedirs(images_dir, exist_ok=True)
  entries = []
  index = 0
  for split, count in counts:
    for _ in range(count):
      _, encoded, captions = make_image(index)
      filename = f'{index:05d}.png'
      with open(os.path.join(images_dir, filename), 'wb') as f:
        f.write(encoded)
      entries.append({'filename': filename, 'filepath': 'images', 'imgid': index, 'split': split,
                      'sentences': [{'raw': c, 'tokens': c.split(), 'sentid': 10 * index + k}
                                    for k, c in enumerate(captions)]})
      index += 1
  # Bad records in train: a missing file, a corrupt file, no sentences, an empty
  # caption (the entry is kept with its other caption).
  entries.append({'filename': 'missing.png', 'filepath': 'images', 'imgid': 900, 'split': 'train',
                  'sentences': [{'raw': 'never seen'}]})
  with open(os.path.join(images_dir, 'corrupt.png'), 'wb') as f:
    f.write(b'\x89PNG\r\n\x1a\nthis is not an image')
  entries.append({'filename': 'corrupt.png', 'filepath': 'images', 'imgid': 901, 'split': 'train',
                  'sentences': [{'raw': 'a corrupt image'}]})
  entries.append({'filename': '00000.png', 'filepath': 'images', 'imgid': 902, 'split': 'train', 'sentences': []})
  entries[1]['sentences'].append({'raw': '   ', 'sentid': 99})
  path = os.path.join(root, 'dataset_test.json')
  with open(path, 'w') as f:
    json.dump({'images': entries, 'dataset': 'test'}, f)
  return path


def write_wds(root, split='train', num_shards=3, per_shard=5, truncate_last=False,
              first_index=0):
  """Shards `root/{split}-{i:04d}.tar`; returns the brace pattern with '{split}'."""
  os.makedirs(root, exist_ok=True)
  index = first_index
  for shard in range(num_shards):
    path = os.path.join(root, f'{split}-{shard:04d}.tar')
    with webdataset.TarWriter(path) as sink:
      for _ in range(per_shard):
        _, encoded, captions = make_image(index, 'JPEG')
        sink.write({'__key__': f'sample{index:06d}', 'jpg': encoded,
                    'txt': '\n'.join(captions).encode()})
        index += 1
    if truncate_last and shard == num_shards - 1:
      size = os.path.getsize(path)
      with open(path, 'r+b') as f:
        f.truncate(size // 2)
  return os.path.join(root, '{split}-*.tar')

"""Karpathy-split JSON (`dataset_flickr30k.json`, `dataset_coco.json`) plus an image folder.

The JSON is `{"images": [{"filename", "filepath"?, "split", "sentences":
[{"raw", "tokens"}], "imgid", "cocoid"?}, ...]}` with splits train, restval
(COCO), val and test. The standard test sets: Flickr30K `test` (1,000 images),
COCO `test` (5,000 images; the 1k figures are the mean over the five folds
`test[0:1000]` ... `test[4000:5000]`). Image ids are `cocoid` when present,
else `imgid`. Images are `image_root/filepath/filename`, `image_root`
defaulting to the JSON file's folder.
"""

import json
import os

import numpy as np

from jaxret import errors
from jaxret.data import bad_records as bad_records_lib
from jaxret.data import images as images_lib
from jaxret.data import records as records_lib
from jaxret.data import split_spec


def _caption(sentence):
  raw = sentence.get('raw')
  if raw is None:
    raw = ' '.join(sentence.get('tokens', ()))
  return ' '.join(str(raw).split())


def read_json(path):
  try:
    with open(path) as f:
      payload = json.load(f)
  except OSError as e:
    raise errors.UserError(f'cannot read the Karpathy JSON data.path={path!r}: {e}') from e
  except json.JSONDecodeError as e:
    raise errors.UserError(f'data.path={path!r} is not valid JSON: {e}') from e
  if not isinstance(payload, dict) or not isinstance(payload.get('images'), list):
    raise errors.UserError(f'{path} is not a Karpathy-split file: it needs an "images" list')
  return payload['images']


def load_split(options, split, image_size, num_threads=1):
  """`records.Records` of jaxret split `split` (mapped by `options.splits`)."""
  entries = read_json(options.path)
  root = options.image_root or os.path.dirname(os.path.abspath(options.path))
  bad = bad_records_lib.BadRecords(options.on_bad_record, name=split)
  present = sorted({str(e.get('split')) for e in entries})
  selected = []
  for name, part in split_spec.parse(split_spec.lookup(options.splits, split)):
    # A part with no images (Flickr30K has no 'restval') adds nothing.
    selected.extend([e for e in entries if e.get('split') == name][part])
  if not selected:
    raise errors.UserError(f'split {split!r} ({split_spec.lookup(options.splits, split)}) has '
                           f'no images in {options.path}; its splits: {", ".join(present)}')
  files, names, ids, captions = [], [], [], []
  for entry in selected:
    relative = os.path.join(entry.get('filepath', ''), entry.get('filename', ''))
    if not entry.get('sentences'):
      bad.report('no_captions', relative or f'entry {entry.get("imgid")}')
      continue
    texts = []
    for sentence in entry['sentences']:
      text = _caption(sentence)
      if text:
        texts.append(text)
      else:
        bad.report('empty_caption', relative, f'sentence {sentence.get("sentid")}')
    if not texts:
      continue
    path = records_lib.existing_file(root, relative, bad, 'missing_image')
    if path is None:
      continue
    files.append(path)
    names.append(relative)
    ids.append(int(entry['cocoid'] if 'cocoid' in entry else entry['imgid']))
    captions.append(texts)
  if not files:
    raise errors.UserError(f'no usable images in split {split!r} of {options.path} '
                           f'(images looked for under {root}; set data.image_root)')

  images = images_lib.EncodedImages(records_lib.file_reader(files), names, image_size, bad,
                                    num_threads)
  return records_lib.Records(images=images, image_ids=np.asarray(ids, np.int64),
                             captions=captions, bad_records=bad)

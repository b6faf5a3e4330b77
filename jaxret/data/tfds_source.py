"""TensorFlow Datasets through `tfds.data_source` (ArrayRecord, random access), without TensorFlow.

The dataset must already be prepared in `data.path` (the data_dir, or TFDS's
default) in the ArrayRecord format; nothing is downloaded. Any dataset with an
image feature and a caption feature works, mapped by `data.image_key`,
`data.caption_key` and `data.id_key`; the defaults fit `coco_captions`
(`image`, `captions/text`, `image/id`; its splits train, restval, val and test
are Karpathy's). The captions and ids are read once when the split loads; the
image bytes are read again (undecoded by TFDS) when the pipeline needs them.
"""

import numpy as np

from jaxret import errors
from jaxret.data import bad_records as bad_records_lib
from jaxret.data import images as images_lib
from jaxret.data import records as records_lib
from jaxret.data import split_spec

READ_CHUNK = 256


def feature(example, key):
  """`example['a']['b']` for key 'a/b', or the flat key 'a/b' itself when it exists."""
  if key in example:
    return example[key]
  value = example
  for part in key.split('/'):
    if not isinstance(value, dict) or part not in value:
      raise KeyError(key)
    value = value[part]
  return value


def _text(value):
  return value.decode('utf-8') if isinstance(value, bytes) else str(value)


def captions_of(value):
  if isinstance(value, (bytes, str)):
    value = [value]
  return [' '.join(_text(v).split()) for v in np.asarray(value, object).reshape(-1)]


def _skip_decoding(tfds, image_key):
  """Decoders that leave the image feature as its encoded bytes."""
  decoders = tfds.decode.SkipDecoding()
  for part in reversed(image_key.split('/')):
    decoders = {part: decoders}
  return decoders


def open_source(options, split):
  # Imported here: TFDS takes seconds to import and only this source needs it.
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  spec = split_spec.lookup(options.splits, split)
  split_spec.parse(spec)  # Refuses a malformed spec with jaxret's message.
  try:
    return tfds.data_source(options.name, split=spec, data_dir=options.path or None,
                            download=False, decoders=_skip_decoding(tfds, options.image_key))
  except Exception as e:  # pylint: disable=broad-except  # TFDS raises many kinds.
    raise errors.UserError(
        f'cannot open TFDS dataset {options.name!r} split {spec!r} in data_dir '
        f'{options.path or "(TFDS default)"}: {type(e).__name__}: {e}. It must be prepared '
        'there in the ArrayRecord format (download_and_prepare(file_format="array_record"))'
    ) from e


def load_split(options, split, image_size, num_threads=1):
  source = open_source(options, split)
  bad = bad_records_lib.BadRecords(options.on_bad_record, name=split)
  label = f'{options.name}:{split_spec.lookup(options.splits, split)}'
  rows, ids, captions = [], [], []
  for start in range(0, len(source), READ_CHUNK):
    indices = list(range(start, min(start + READ_CHUNK, len(source))))
    for index, example in zip(indices, source.__getitems__(indices)):
      where = f'{label}[{index}]'
      try:
        texts = captions_of(feature(example, options.caption_key))
        image_id = feature(example, options.id_key) if options.id_key != '__index__' else index
      except KeyError as e:
        raise errors.UserError(
            f'TFDS dataset {options.name!r} has no feature {e.args[0]!r}; its features: '
            f'{", ".join(sorted(_flat_keys(example)))} (set data.caption_key / data.id_key)'
        ) from e
      if not texts:
        bad.report('no_captions', where)
        continue
      kept = [t for t in texts if t]
      for _ in range(len(texts) - len(kept)):
        bad.report('empty_caption', where)
      if not kept:
        continue
      rows.append(index)
      ids.append(np.asarray(image_id).item())
      captions.append(kept)
  if not rows:
    raise errors.UserError(f'no usable examples in {label}')
  image_key = options.image_key

  def read(row):
    try:
      return feature(source[rows[row]], image_key)
    except KeyError as e:
      raise OSError(f'no image feature {image_key!r}') from e

  names = [f'{label}[{r}]' for r in rows]
  ids = np.asarray([_text(i) if isinstance(i, bytes) else i for i in ids])
  images = images_lib.EncodedImages(read, names, image_size, bad, num_threads)
  return records_lib.Records(images=images, image_ids=ids, captions=captions, bad_records=bad)


def _flat_keys(example, prefix=''):
  for key, value in example.items():
    if isinstance(value, dict):
      yield from _flat_keys(value, f'{prefix}{key}/')
    else:
      yield prefix + key

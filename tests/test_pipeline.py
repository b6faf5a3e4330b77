"""The training pipeline on real-format data: decoding and crops, determinism, sharding by
process, exact resume, bad images skipped with a per-epoch summary; webdataset streaming."""

import json

import numpy as np
import pytest

import caption_files
from jaxret.data import options as data_options
from jaxret.data import pipeline
from jaxret.data import sources
from jaxret.data import tokenizer as tokenizer_lib
from jaxret.data.builtin import dataset as builtin


def data_config(**overrides):
  config = data_options.defaults()
  config.update(dict(image_size=32, num_threads=2, prefetch=2, image_mean=(0.5, 0.5, 0.5),
                     image_std=(0.5, 0.5, 0.5)))
  config.update(overrides)
  return config


@pytest.fixture(scope='module')
def karpathy(tmp_path_factory):
  path = caption_files.write_karpathy(str(tmp_path_factory.mktemp('karpathy')))
  config = data_config(source='karpathy', path=path, train_crop='random_resized')
  records = sources.load_split(config, 'train')
  tokenizer = tokenizer_lib.build_word_level((c for caps in records.captions for c in caps), 12)
  return config, records, tokenizer


def test_builtin_batches_are_the_rendered_images_uncropped(tiny_config):
  records = builtin.load_split(tiny_config.data, 'train')
  tokenizer = tokenizer_lib.build_word_level((c for caps in records.captions for c in caps), 24)
  dataset = pipeline.train_dataset(records, tokenizer, tiny_config.data, seed=0, global_batch=8)
  batch = dataset[3]
  assert set(batch) == {'image', 'text', 'text_mask', 'image_id'}
  expected = pipeline.normalize_images(records.images[batch['image_id']], tiny_config.data)
  np.testing.assert_array_equal(batch['image'], expected)


def test_deterministic_for_a_seed_and_cropped_at_random(karpathy):
  config, records, tokenizer = karpathy
  first = pipeline.train_dataset(records, tokenizer, config, seed=3, global_batch=8)[2]
  again = pipeline.train_dataset(records, tokenizer, config, seed=3, global_batch=8)[2]
  for key in first:
    np.testing.assert_array_equal(first[key], again[key])
  assert first['image'].shape == (8, 32, 32, 3) and first['text'].shape == (8, 12)
  other = pipeline.train_dataset(records, tokenizer, config, seed=4, global_batch=8)[2]
  assert not np.array_equal(first['image_id'], other['image_id'])
  centre = data_config(source='karpathy', path=config.path, train_crop='none')
  plain = pipeline.train_dataset(records, tokenizer, centre, seed=3, global_batch=8)[2]
  np.testing.assert_array_equal(plain['image_id'], first['image_id'])
  assert not np.allclose(plain['image'], first['image'])  # Random crops differ from centre.


def test_processes_take_contiguous_shares_of_the_global_batch(karpathy):
  config, records, tokenizer = karpathy
  whole = pipeline.train_dataset(records, tokenizer, config, seed=0, global_batch=8)[5]
  parts = [pipeline.train_dataset(records, tokenizer, config, seed=0, global_batch=8,
                                  process_index=p, process_count=2)[5] for p in range(2)]
  for key in ('image', 'text', 'image_id'):
    np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), whole[key])


def test_resume_from_the_iterator_state_sees_the_same_batches(karpathy):
  config, records, tokenizer = karpathy
  dataset = pipeline.train_dataset(records, tokenizer, config, seed=0, global_batch=4)
  iterator = pipeline.train_iterator(dataset, config)
  for _ in range(3):
    next(iterator)
  state = json.loads(json.dumps(iterator.get_state()))  # As the checkpoint stores it.
  expected = [next(iterator) for _ in range(3)]
  resumed = pipeline.train_iterator(dataset, config)
  resumed.set_state(state)
  for want, got in zip(expected, (next(resumed) for _ in range(3))):
    np.testing.assert_array_equal(want['image'], got['image'])
    np.testing.assert_array_equal(want['text'], got['text'])


def test_corrupt_images_are_skipped_and_summarised_per_epoch(karpathy, capsys):
  config, records, tokenizer = karpathy
  corrupt_row = [i for i, n in enumerate(records.images.names) if n.endswith('corrupt.png')][0]
  num_pairs = sum(len(c) for c in records.captions)
  dataset = pipeline.train_dataset(records, tokenizer, config, seed=0, global_batch=4)
  iterator = pipeline.train_iterator(dataset, config)
  batches = [next(iterator) for _ in range(num_pairs // 4 + 2)]  # Into the second epoch.
  ids = np.concatenate([b['image_id'] for b in batches])
  assert corrupt_row not in ids.tolist() and len(ids) == 4 * len(batches)
  assert all(set(b) == {'image', 'text', 'text_mask', 'image_id'} for b in batches)
  err = capsys.readouterr().err
  assert 'skipped corrupt image: images/corrupt.png' in err
  assert ('train epoch 0 done; bad records skipped in it: 1 corrupt image (dropped while '
          'loading: 1 empty caption, 1 missing image, 1 entry without captions)') in err


def test_fill_bad_slots():
  np.testing.assert_array_equal(pipeline.fill_bad_slots([True, False, False, True]),
                                [0, 3, 3, 3])
  np.testing.assert_array_equal(pipeline.fill_bad_slots([False, True, True, False]),
                                [1, 1, 2, 1])


# Webdataset streaming ------------------------------------------------------


@pytest.fixture(scope='module')
def shards(tmp_path_factory):
  root = tmp_path_factory.mktemp('wds')
  pattern = caption_files.write_wds(str(root), num_shards=4, per_shard=5)
  config = data_config(source='wds', path=pattern, shuffle_buffer=7)
  stream_records = sources.load_split(config, 'train')
  tokenizer = tokenizer_lib.build_word_level(
      (c for caps in stream_records.captions for c in caps), 12)
  return config, stream_records, tokenizer


def _names(stream, count, state=None):
  iterator = iter(stream)
  if state is not None:
    iterator.set_state(state)
  return [next(iterator)['name'] for _ in range(count)], iterator.get_state()


def test_stream_visits_each_sample_once_per_epoch_and_resumes_exactly(shards):
  _, stream_records, _ = shards
  stream = stream_records.stream(seed=0)
  names, _ = _names(stream, 40)
  assert sorted(names[:20]) == sorted(names[20:]) and len(set(names[:20])) == 20
  assert names[:20] != names[20:]  # Reshuffled each epoch.
  for split_at in (3, 7, 18, 26):  # Mid-chunk, chunk edge, across the epoch boundary.
    head, state = _names(stream, split_at)
    tail, _ = _names(stream, 40 - split_at, json.loads(json.dumps(state)))
    assert head + tail == names


def test_stream_splits_shards_between_processes(shards):
  _, stream_records, _ = shards
  seen = [_names(stream_records.stream(seed=0, process_index=p, process_count=2), 10)[0]
          for p in range(2)]
  shards_of = [{n.split(':')[0] for n in names} for names in seen]
  assert not shards_of[0] & shards_of[1] and len(set(seen[0] + seen[1])) == 20


def test_stream_batches_and_resume_through_the_pipeline(shards):
  config, stream_records, tokenizer = shards
  dataset = pipeline.train_dataset(stream_records, tokenizer, config, seed=0, global_batch=4)
  iterator = pipeline.train_iterator(dataset, config)
  next(iterator)
  state = iterator.get_state()
  expected = [next(iterator) for _ in range(6)]
  resumed = pipeline.train_iterator(dataset, config)
  resumed.set_state(state)
  for want in expected:
    got = next(resumed)
    assert set(got) == {'image', 'text', 'text_mask', 'image_id'}
    np.testing.assert_array_equal(want['image'], got['image'])
    np.testing.assert_array_equal(want['image_id'], got['image_id'])

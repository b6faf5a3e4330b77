"""Data sources on generated files: Karpathy JSON + folder, TFDS ArrayRecord (built here,
without TensorFlow), webdataset shards; bad records counted, logged and skipped."""

import io
import json

import ml_collections
import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

import caption_files
from jaxret import errors
from jaxret.data import bad_records as bad_records_lib
from jaxret.data import images as images_lib
from jaxret.data import options as data_options
from jaxret.data import sources


def data_config(**overrides):
  config = data_options.defaults()
  config.image_size = 32
  config.num_threads = 2
  config.update(overrides)
  return config


# Karpathy ------------------------------------------------------------------


@pytest.fixture(scope='module')
def karpathy_json(tmp_path_factory):
  return caption_files.write_karpathy(str(tmp_path_factory.mktemp('karpathy')))


def test_karpathy_splits_and_bad_records(karpathy_json, capsys):
  config = data_config(source='karpathy', path=karpathy_json)
  train = sources.load_split(config, 'train')
  # 12 train + 4 restval + the corrupt file (found only when decoded); the
  # missing file and the entry without sentences are dropped.
  assert len(train) == 17
  assert train.bad_records.counts == {(None, 'missing_image'): 1, (None, 'no_captions'): 1,
                                      (None, 'empty_caption'): 1}
  logged = capsys.readouterr().err
  assert 'skipped missing image:' in logged and 'missing.png' in logged
  assert 'skipped entry without captions: images/00000.png' in logged
  assert 'skipped empty caption: images/00001.png' in logged
  assert train.captions[1] == ['a green box number 1', 'green rectangle 1']  # Blank one dropped.
  test = sources.load_split(config, 'test')
  assert len(test) == 6 and test.image_ids.tolist() == list(range(22, 28))
  assert test.images.shape == (6, 32, 32, 3) and test.images[:].dtype == np.uint8


def test_karpathy_images_are_resized_and_centre_cropped(karpathy_json):
  records = sources.load_split(data_config(source='karpathy', path=karpathy_json), 'val')
  array, _, _ = caption_files.make_image(16)
  side = min(array.shape[:2])
  top, left = (array.shape[0] - side) // 2, (array.shape[1] - side) // 2
  expected = np.asarray(Image.fromarray(array[top:top + side, left:left + side]).resize(
      (32, 32), Image.Resampling.BICUBIC))
  assert np.abs(records.images[0].astype(int) - expected).mean() < 3


def test_karpathy_test_slices_and_refusals(karpathy_json):
  config = data_config(source='karpathy', path=karpathy_json)
  config.splits['test1k'] = 'test[2:5]'
  assert sources.load_split(config, 'test1k').image_ids.tolist() == [24, 25, 26]
  with pytest.raises(errors.UserError, match='no data.splits entry for split'):
    sources.load_split(config, 'dev')
  config.splits['test'] = 'nosuch'
  with pytest.raises(errors.UserError, match='its splits: restval, test, train, val'):
    sources.load_split(config, 'test')
  with pytest.raises(errors.UserError, match='needs --config.data.path'):
    sources.load_split(data_config(source='karpathy'), 'test')


def test_bad_records_are_an_error_when_configured(karpathy_json):
  with pytest.raises(bad_records_lib.BadRecordError, match='train empty caption: images/00001.png'):
    sources.load_split(data_config(source='karpathy', path=karpathy_json,
                                   on_bad_record='error'), 'train')


def test_a_corrupt_evaluation_image_is_black_and_reported(karpathy_json, capsys):
  records = sources.load_split(data_config(source='karpathy', path=karpathy_json), 'train')
  corrupt = [i for i, n in enumerate(records.images.names) if n.endswith('corrupt.png')][0]
  assert not records.images[corrupt].any()
  assert records.bad_records.counts[None, 'corrupt_image'] == 1
  assert 'skipped corrupt image: images/corrupt.png' in capsys.readouterr().err


# TFDS ----------------------------------------------------------------------


class TinyCaptions(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """An image-caption dataset in the coco_captions layout, written without TensorFlow."""
  VERSION = tfds.core.Version('1.0.0')

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        'image': tfds.features.Image(encoding_format='png'),
        'image/id': np.int64,
        'captions': tfds.features.Sequence({'id': np.int64, 'text': tfds.features.Text()}),
    }))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {'train': self._examples(0, 6), 'test': self._examples(6, 10)}

  def _generate_examples(self):  # Abstract in TFDS; the splits use `_examples`.
    raise NotImplementedError

  def _examples(self, start, stop):
    for index in range(start, stop):
      _, encoded, captions = caption_files.make_image(index)  # PNG bytes: no TF to encode.
      if index == 7:
        captions = ['']  # An empty caption: the example is skipped.
      yield index, {'image': encoded, 'image/id': 1000 + index,
                    'captions': {'id': list(range(len(captions))), 'text': captions}}


@pytest.fixture(scope='module')
def tfds_dir(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  TinyCaptions(data_dir=data_dir, file_format='array_record').download_and_prepare()
  return data_dir


def test_tfds_data_source_without_tensorflow(tfds_dir):
  with pytest.raises(ImportError):
    import tensorflow  # pylint: disable=import-outside-toplevel,unused-import
  config = data_config(source='tfds', name='tiny_captions', path=tfds_dir,
                       splits={'train': 'train', 'test': 'test', 'val': 'test[:2]'})
  train = sources.load_split(config, 'train')
  assert sorted(train.image_ids.tolist()) == [1000, 1001, 1002, 1003, 1004, 1005]
  row = train.image_ids.tolist().index(1003)
  assert train.captions[row] == ['a yellow box number 3', 'yellow rectangle 3']
  array, _, _ = caption_files.make_image(3)
  image = train.images.open(row)
  np.testing.assert_array_equal(np.asarray(image), array)  # PNG round trip, lossless.
  test = sources.load_split(config, 'test')
  assert len(test) == 3 and test.bad_records.counts == {(None, 'empty_caption'): 1}
  assert len(sources.load_split(config, 'val')) == 2


def test_tfds_refusals(tfds_dir):
  config = data_config(source='tfds', name='no_such_dataset', path=tfds_dir)
  with pytest.raises(errors.UserError, match="cannot open TFDS dataset 'no_such_dataset'"):
    sources.load_split(config, 'test')
  config = data_config(source='tfds', name='tiny_captions', path=tfds_dir, caption_key='text',
                       splits={'test': 'test'})
  with pytest.raises(errors.UserError, match="no feature 'text'; its features: .*captions/text"):
    sources.load_split(config, 'test')


# Webdataset ----------------------------------------------------------------


def test_wds_evaluation_split_and_truncated_shard(tmp_path, capsys):
  pattern = caption_files.write_wds(str(tmp_path), split='val', num_shards=2, per_shard=4,
                                    truncate_last=True)
  records = sources.load_split(data_config(source='wds', path=pattern), 'val')
  assert 4 <= len(records) < 8  # The second shard ends mid-record.
  assert records.image_ids[0] == 'sample000000'
  assert records.captions[0] == ['a red box number 0', 'red rectangle 0']
  assert records.bad_records.counts[None, 'truncated_shard'] == 1
  assert 'skipped shard ending mid-record: ' in capsys.readouterr().err
  assert records.images[:].shape == (len(records), 32, 32, 3)


def test_wds_incomplete_samples_are_skipped(tmp_path):
  import webdataset  # pylint: disable=import-outside-toplevel
  with webdataset.TarWriter(str(tmp_path / 'test-0000.tar')) as sink:
    sink.write({'__key__': 'a', 'jpg': caption_files.make_image(0, 'JPEG')[1], 'txt': b'ok'})
    sink.write({'__key__': 'b', 'txt': b'no image here'})
    sink.write({'__key__': 'c', 'jpg': caption_files.make_image(1, 'JPEG')[1], 'txt': b'  \n'})
  records = sources.load_split(data_config(source='wds', path=str(tmp_path / '{split}-*.tar')),
                               'test')
  assert records.image_ids.tolist() == ['a']
  assert records.bad_records.counts == {(None, 'incomplete_sample'): 1,
                                        (None, 'empty_caption'): 1}


def test_wds_refusals(tmp_path):
  with pytest.raises(errors.UserError, match="needs '{split}'"):
    sources.load_split(data_config(source='wds', path=str(tmp_path / 'x.tar')), 'test')
  with pytest.raises(errors.UserError, match='do not exist'):
    sources.load_split(data_config(source='wds', path=str(tmp_path / '{split}-{0..1}.tar')),
                       'test')


# Cropping ------------------------------------------------------------------


def test_random_resized_crop_is_seeded_and_within_bounds():
  rng = np.random.default_rng(0)
  for _ in range(50):
    width, height = int(rng.integers(10, 200)), int(rng.integers(10, 200))
    box = images_lib.random_resized_box(width, height, np.random.default_rng(1), (0.5, 1.0),
                                        (3 / 4, 4 / 3))
    assert box == images_lib.random_resized_box(width, height, np.random.default_rng(1),
                                                (0.5, 1.0), (3 / 4, 4 / 3))
    left, top, right, bottom = box
    assert 0 <= left < right <= width and 0 <= top < bottom <= height
  image = Image.new('RGB', (50, 30))
  assert images_lib.random_resized_crop(image, 16, np.random.default_rng(0), (0.5, 1.0),
                                        (0.75, 1.33)).shape == (16, 16, 3)


def test_jpeg_draft_decoding_keeps_enough_pixels():
  buffer = io.BytesIO()
  Image.new('RGB', (400, 300), (10, 200, 30)).save(buffer, format='JPEG')
  image = images_lib.open_image(buffer.getvalue(), min_size=64)
  assert min(image.size) >= 64 and image.size[0] < 400  # Decoded at a reduced scale.
  with pytest.raises(images_lib.BadImage):
    images_lib.open_image(buffer.getvalue()[:100])


def test_options_are_checked():
  with pytest.raises(errors.UserError, match='unknown data.source'):
    data_options.resolve(ml_collections.ConfigDict({'source': 'csv'}))
  with pytest.raises(errors.UserError, match='unknown data.train_crop'):
    data_options.resolve(ml_collections.ConfigDict({'train_crop': 'flip'}))
  # A config from before these keys existed keeps the built-in behaviour.
  assert data_options.resolve(ml_collections.ConfigDict({'image_size': 64})).source == 'builtin'
  assert json.dumps(data_options.defaults().to_dict())  # Saved in config.json.


def test_a_source_given_as_an_import_path():
  config = data_config(source='jaxret.data.builtin.dataset:load_split', seed=0, num_train=4,
                       num_val=8, num_test=8, captions_per_image=2, near_duplicates_per_group=4)
  assert len(sources.load_split(config, 'test')) == 8

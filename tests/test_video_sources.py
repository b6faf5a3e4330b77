"""Real video layouts on tiny generated .mp4 files (PyAV): MSR-VTT and VATEX caption files,
uniformly sampled resized frames, and each bad input reported by name or refused."""

import json

import numpy as np
import pytest

from jaxret import errors
from jaxret.data import options as data_options
from jaxret.data import pipeline
from jaxret.data import sources
from jaxret.data import tokenizer as tokenizer_lib
from jaxret.data import videos

FRAMES = 4


def _frames(count, height=24, width=40):
  """`count` frames, frame k a flat grey of level 40 + 20k (order visible after H.264)."""
  levels = 40 + 20 * np.arange(count)
  return np.broadcast_to(levels[:, None, None, None], (count, height, width, 3)).astype(np.uint8)


@pytest.fixture(scope='module')
def video_dir(tmp_path_factory):
  """v0..v5: good clips (v2 has 2 frames: short; v3 is 48x80, another size); v4 corrupt;
  v5 zero-length; 'gone' is named by the captions but has no file."""
  root = tmp_path_factory.mktemp('videos')
  for i in range(4):
    count = 2 if i == 2 else 8
    frames = _frames(count, *((48, 80) if i == 3 else (24, 40)))
    (root / f'v{i}.mp4').write_bytes(videos.encode_mp4(frames))
  (root / 'v4.mp4').write_bytes(b'not a video' * 50)
  (root / 'v5.mp4').write_bytes(b'')
  ids = ['v0', 'v1', 'v2', 'v3', 'v4', 'v5', 'gone']
  msrvtt = {'videos': [{'video_id': v, 'split': 'train' if i < 5 else 'test'}
                       for i, v in enumerate(ids)] + [{'video_id': 'v0', 'split': 'test'}],
            'sentences': [{'video_id': v, 'caption': f'clip {v} number {k}'}
                          for v in ids for k in range(2)]}
  (root / 'msrvtt.json').write_text(json.dumps(msrvtt))
  (root / 'vatex_training.json').write_text(json.dumps(
      [{'videoID': v, 'enCap': [f'clip {v}', '  ']} for v in ids[:4]]))
  (root / 'vatex_validation.json').write_text(json.dumps(
      [{'videoID': v, 'enCap': [f'clip {v}']} for v in ('v1', 'gone')]))
  return root


def _config(root, source, **overrides):
  config = data_options.defaults()
  config.update(dict(source=source, num_frames=FRAMES, image_size=16, num_threads=2,
                     path=str(root / ('msrvtt.json' if source == 'msrvtt'
                                      else 'vatex_{split}.json'))))
  config.splits = ({'train': 'train', 'test': 'test'} if source == 'msrvtt'
                   else {'train': 'training', 'val': 'validation'})
  config.update(overrides)
  return config


def test_uniform_sampling_and_resizing():
  np.testing.assert_array_equal(videos.sample_indices(8, 4), [1, 3, 5, 7])
  np.testing.assert_array_equal(videos.sample_indices(2, 4), [0, 0, 1, 1])  # Padded.
  clip = videos.decode_clip(videos.encode_mp4(_frames(8)), FRAMES, 16)
  assert clip.shape == (FRAMES, 16, 16, 3) and clip.dtype == np.uint8
  levels = clip.mean(axis=(1, 2, 3))
  np.testing.assert_allclose(levels, 40 + 20 * np.array([1, 3, 5, 7]), atol=3)


def test_msrvtt_split_and_bad_records(video_dir, capsys):
  records = sources.load_split(_config(video_dir, 'msrvtt'), 'train')
  assert records.image_ids.tolist() == ['v0', 'v1', 'v2', 'v3', 'v4']
  assert records.captions[1] == ['clip v1 number 0', 'clip v1 number 1']
  assert records.images.shape == (5, FRAMES, 16, 16, 3)
  clips = records.images[:]  # Every size comes out resized; bad ones black and reported.
  assert clips.shape == (5, FRAMES, 16, 16, 3)
  assert clips[3].mean() > 40 and not clips[4].any()
  logged = capsys.readouterr().err
  assert 'skipped corrupt video: v4.mp4' in logged
  test = sources.load_split(_config(video_dir, 'msrvtt'), 'test')
  # The zero-length v5 is found when decoded; 'gone' (no file) is reported at once.
  assert test.image_ids.tolist() == ['v5', 'v0']
  logged = capsys.readouterr().err
  assert 'skipped missing video:' in logged and 'gone.mp4' in logged
  assert test.images[0].sum() == 0 and 'v5.mp4 (empty file)' in capsys.readouterr().err


def test_vatex_split_files_and_refusals(video_dir, capsys):
  train = sources.load_split(_config(video_dir, 'vatex'), 'train')
  assert train.image_ids.tolist() == ['v0', 'v1', 'v2', 'v3']
  assert train.captions[0] == ['clip v0']
  assert train.bad_records.counts[None, 'empty_caption'] == 4
  val = sources.load_split(_config(video_dir, 'vatex'), 'val')
  assert val.image_ids.tolist() == ['v1']
  assert 'gone.mp4' in capsys.readouterr().err
  with pytest.raises(errors.UserError, match='is video: it needs data.num_frames > 0'):
    sources.load_split(_config(video_dir, 'vatex', num_frames=0), 'train')
  with pytest.raises(errors.UserError, match='cannot read the VATEX caption file'):
    sources.load_split(_config(video_dir, 'vatex', path=str(video_dir / 'x_{split}.json')),
                       'train')
  with pytest.raises(errors.UserError, match='not an MSR-VTT file'):
    sources.load_split(_config(video_dir, 'msrvtt', path=str(video_dir / 'vatex_training.json')),
                       'train')
  with pytest.raises(errors.UserError, match='unknown data.short_clip'):
    sources.load_split(_config(video_dir, 'msrvtt', short_clip='drop'), 'train')


def test_short_clips_padded_or_refused_and_training_skips_bad_videos(video_dir, capsys):
  padded = sources.load_split(_config(video_dir, 'msrvtt'), 'train')
  short = padded.images[2]
  assert short.any() and np.abs(short[0].astype(int) - short[1]).max() <= 2  # A repeated frame.
  refused = sources.load_split(_config(video_dir, 'msrvtt', short_clip='refuse'), 'train')
  assert not refused.images[2].any()
  assert 'v2.mp4 (2 frames, fewer than data.num_frames=4)' in capsys.readouterr().err
  config = _config(video_dir, 'msrvtt', short_clip='refuse')
  config.image_mean, config.image_std = (0.5,) * 3, (0.5,) * 3
  tokenizer = tokenizer_lib.build_word_level(
      (t for caps in refused.captions for t in caps), 8)
  dataset = pipeline.train_dataset(refused, tokenizer, config, seed=0, global_batch=10)
  batch = dataset[0]
  assert batch['image'].shape == (10, FRAMES, 16, 16, 3)
  # The short v2 and the corrupt v4 are skipped: their slots hold good clips.
  assert set(batch['image_id'].tolist()) <= {0, 1, 3}
  assert refused.bad_records.counts[0, 'corrupt_video'] == 1
  assert refused.bad_records.counts[0, 'short_video'] == 1
  config.on_bad_record = 'error'  # The first bad record stops the run, naming it.
  with pytest.raises(errors.UserError, match='missing video: .*gone.mp4'):
    sources.load_split(config, 'test')
  strict = sources.load_split(config, 'train')
  with pytest.raises(errors.UserError, match='corrupt video: v4.mp4'):
    strict.images[4]


def test_webdataset_shards_with_mp4_members(tmp_path, capsys):
  import webdataset  # pylint: disable=import-outside-toplevel
  for split in ('train', 'test'):
    with webdataset.TarWriter(str(tmp_path / f'{split}-0000.tar')) as sink:
      for i in range(4):
        sink.write({'__key__': f'c{i}', 'txt': f'clip {i}'.encode(),
                    'mp4': videos.encode_mp4(_frames(8)) if i != 2 else b'broken'})
  config = data_options.defaults()
  config.update(dict(source='wds', path=str(tmp_path / '{split}-0000.tar'), num_frames=FRAMES,
                     image_size=16, num_threads=1, image_mean=(0.5,) * 3,
                     image_std=(0.5,) * 3, prefetch=1))
  config.splits = {'train': 'train', 'test': 'test'}
  test = sources.load_split(config, 'test')
  assert test.image_ids.tolist() == ['c0', 'c1', 'c2', 'c3']
  clips = test.images[:]
  assert clips.shape == (4, FRAMES, 16, 16, 3) and clips[0].any() and not clips[2].any()
  assert 'skipped corrupt video: ' in capsys.readouterr().err
  tokenizer = tokenizer_lib.build_word_level(['clip 0 1 2 3'], 8)
  stream = sources.load_split(config, 'train')
  batch = next(iter(pipeline.train_dataset(stream, tokenizer, config, seed=0, global_batch=4)))
  assert batch['image'].shape == (4, FRAMES, 16, 16, 3)
  assert batch[pipeline.BAD_RECORDS_KEY].total() == 1  # The broken member, skipped.

"""The video tower: per-frame ViT with the image tower's parameter names, mean pooling blind
to frame order, the temporal transformer not; every dual-encoder model takes clips; a video
state starts from an image workdir (config.init.workdir); the methods benchmark measures the
video tower."""

import json
import re
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from conftest import REPO
from conftest import subprocess_env
from jaxret import errors
from jaxret import models
from jaxret.config import workdir as workdir_config
from jaxret.data import tokenizer as tokenizer_lib
from jaxret.inference import restore as restore_lib
from jaxret.models import capabilities
from jaxret.models import flops
from jaxret.models import video
from jaxret.models import vit
from jaxret.models.load import checkpoint
from jaxret.parallel import mesh as mesh_lib
from jaxret.train import setup
from jaxret.train import warm_start
from method_configs import load_config

CLIPS = jax.random.normal(jax.random.PRNGKey(1), (2, 4, 16, 16, 3))


def _tower(temporal):
  return video.VideoViT(variant='mu/8', temporal=temporal, max_frames=4)


@pytest.mark.parametrize('temporal', video.TEMPORAL)
def test_tower_shapes_and_frame_order(temporal):
  tower = _tower(temporal)
  params = tower.init(jax.random.PRNGKey(0), CLIPS)
  image_params = vit.ViT(variant='mu/8').init(jax.random.PRNGKey(0), CLIPS[:, 0])['params']
  # The image ViT's parameters, with the same names and shapes, plus time.
  shapes = jax.tree.map(jnp.shape, params['params'])
  assert {k: shapes[k] for k in image_params} == jax.tree.map(jnp.shape, image_params)
  pooled, out = tower.apply(params, CLIPS)
  assert pooled.shape == (2, 32)
  assert out['patch_tokens'].shape == (2, 4 * 4, 32)  # Space-time: 4 frames x 4 patches.
  assert out['frame_vectors'].shape == (2, 4, 32)
  # Frame by frame the image ViT's.
  frame_pooled, _ = vit.ViT(variant='mu/8').apply({'params': {
      k: params['params'][k] for k in image_params}}, CLIPS[:, 2])
  time = params['params']['time_embedding'][0, 2]
  np.testing.assert_allclose(out['frame_vectors'][:, 2], frame_pooled + time, atol=1e-5)
  reversed_pooled, _ = tower.apply(params, CLIPS[:, ::-1])
  difference = float(jnp.max(jnp.abs(reversed_pooled - pooled)))
  if temporal == 'mean':
    assert difference < 1e-5  # Averaging frames cannot see their order.
  else:
    assert difference > 1e-3


def test_too_many_frames_and_images_are_refused():
  tower = _tower('mean')
  with pytest.raises(ValueError, match='max_frames=4'):
    tower.init(jax.random.PRNGKey(0), jnp.zeros((1, 5, 16, 16, 3)))
  with pytest.raises(ValueError, match=r'\(B, T, H, W, 3\)'):
    tower.init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)))


@pytest.mark.parametrize('method', ['clip', 'filip', 'caption'])
def test_every_model_takes_clips_by_config(method):
  config = load_config('video', f'runlocal,method={method}')
  setup.check_config(config)
  model = models.build(config.model, vocab_size=20, text_len=6)
  assert isinstance(model, capabilities.VideoInput)
  clips = jnp.zeros((2, 8, 64, 64, 3))
  tokens, mask = jnp.ones((2, 6), jnp.int32), jnp.ones((2, 6), jnp.int32)
  outputs, _ = jax.eval_shape(lambda: model.init_with_output(
      jax.random.PRNGKey(0), clips, tokens, mask))[0]
  if method == 'clip':
    assert outputs['image_emb'].shape == (2, config.model.embed_dim)
  elif method == 'filip':
    assert outputs['image_tokens'].shape == (2, 8 * 16, config.model.embed_dim)
  else:
    assert outputs['log_p_forward'].shape == (2,)


def test_video_data_needs_a_video_tower_and_a_model_that_takes_clips():
  config = load_config('video', 'runlocal')
  config.model.image = ml_collections.ConfigDict({'variant': 'mu/16', 'pool': 'cls'})
  with pytest.raises(errors.UserError, match='needs a video tower'):
    setup.check_config(config)
  albef = models.build(load_config('albef', 'runlocal').model, vocab_size=20, text_len=6)
  with pytest.raises(errors.UserError, match='capabilities.VideoInput; model Albef is not'):
    capabilities.require(albef, capabilities.VideoInput, 'video data')


def test_flops_count_every_frame_and_the_temporal_transformer():
  config = load_config('video', 'runlocal')
  per_frame = flops.vit_flops('mu/16', 64, depth=1)
  transformer = flops.dual_encoder_train_flops(config.model, 64, 24, 8)
  config.model.image.temporal = 'mean'
  mean = flops.dual_encoder_train_flops(config.model, 64, 24, 8)
  one_frame = flops.dual_encoder_train_flops(config.model, 64, 24, 1)
  assert mean - one_frame == 3 * 7 * per_frame
  assert transformer - mean == 3 * flops.transformer_flops(9, 32, 1, 128)


# Starting the video tower from an image workdir (config.init.workdir, train/warm_start.py).

def _from_image_workdir(workdir, **overrides):
  """configs/video.py:runlocal (2 frames) with the demo's mu/8 frame ViT, from `workdir`."""
  config = load_config('video', 'runlocal,frames=2')
  config.model.image.variant = 'mu/8'
  config.init.workdir = str(workdir)
  for key, value in overrides.items():
    config[key].update(value)
  return config


def _abstract_params(config, tokenizer):
  model = models.build(config.model, vocab_size=tokenizer.vocab_size,
                       text_len=config.data.text_len)
  return restore_lib.abstract_params(model, config)


def test_video_state_starts_from_an_image_workdir(demo_workdir):
  image_dir = demo_workdir[0]
  config = _from_image_workdir(image_dir)
  tokenizer = tokenizer_lib.load_workdir(image_dir, config.data.text_len)  # The same words.
  trainable = setup.Trainable(config, tokenizer, mesh_lib.make_mesh(devices=jax.devices()[:1]))
  state = trainable.init_state()
  image = restore_lib.restore(workdir_config.load(image_dir), image_dir,
                              mesh=trainable.mesh)
  assert image.step == 4  # The demo's latest checkpoint.
  video_params = checkpoint.flatten(jax.device_get(state.params))
  image_params = checkpoint.flatten(jax.device_get(image.params))
  own = {p for p in video_params
         if p.startswith('image_encoder/') and p.split('/')[1] in video.OWN_PARAMS}
  assert own and {p.split('/')[1] for p in own} == set(video.OWN_PARAMS)
  # Every parameter but the video tower's own is the image model's: the frame ViT,
  # and, with the same tokenizer, the text tower, the projections and the logit scale.
  assert set(video_params) - own == set(image_params)
  for path, value in image_params.items():
    np.testing.assert_array_equal(video_params[path], value, err_msg=path)


def test_only_the_image_tower_comes_with_another_tokenizer(demo_workdir):
  image_dir = demo_workdir[0]
  config = _from_image_workdir(image_dir)
  tokenizer = tokenizer_lib.build_word_level(['a red circle moves left'], config.data.text_len)
  params = _abstract_params(config, tokenizer)
  source = warm_start.Source(config, tokenizer, params)
  merged, lines = source.load(params, mesh_lib.make_mesh(devices=jax.devices()[:1]))
  image_params = checkpoint.flatten(jax.device_get(restore_lib.restore(
      workdir_config.load(image_dir), image_dir).params))
  copied = {p for p, value in merged.items() if isinstance(value, np.ndarray)}
  assert copied == {p for p in image_params if p.startswith('image_encoder/')}
  for path in copied:
    np.testing.assert_array_equal(merged[path], image_params[path], err_msg=path)
  assert 'the rest: kept as initialised, the tokenizers differ' in '\n'.join(lines)


@pytest.mark.parametrize('overrides, fragment', [
    ({'model': {'image': {'variant': 'mu/16'}}}, "image tower 'mu/8' (patch 8, "),
    ({'model': {'image': {'depth': 2}}}, 'depth 2'),
    ({'model': {'image': {'pool': 'gap'}}}, 'the workdir has image_encoder/cls'),
    ({'data': {'image_size': 32}}, 'image_encoder/pos_embedding: workdir (1, 64, 32), model '
                                   '(1, 16, 32)'),
    ({'init': {'clip': '/some/clip'}}, 'set only one of them'),
])
def test_image_workdirs_that_do_not_fit_are_refused(demo_workdir, overrides, fragment):
  config = _from_image_workdir(demo_workdir[0], **overrides)
  tokenizer = tokenizer_lib.load_workdir(demo_workdir[0], config.data.text_len)
  trainable = setup.Trainable(config, tokenizer, mesh_lib.make_mesh(devices=jax.devices()[:1]))
  with pytest.raises(errors.UserError, match=re.escape(fragment)):
    trainable.init_state()


def test_a_position_embedding_named_in_reinit_is_resized(demo_workdir):
  config = _from_image_workdir(demo_workdir[0], data={'image_size': 32},
                               init={'reinit': ('image_encoder/pos_embedding',)})
  tokenizer = tokenizer_lib.load_workdir(demo_workdir[0], config.data.text_len)
  params = _abstract_params(config, tokenizer)
  merged, lines = warm_start.Source(config, tokenizer, params).load(
      params, mesh_lib.make_mesh(devices=jax.devices()[:1]))
  assert merged['image_encoder/pos_embedding'].shape == (1, 16, 32)
  assert 'resized image_encoder/pos_embedding: (1, 64, 32) -> (1, 16, 32)' in '\n'.join(lines)


def test_a_path_that_is_not_a_trained_workdir_is_refused(demo_workdir, tmp_path):
  tokenizer = tokenizer_lib.load_workdir(demo_workdir[0], 24)
  config = _from_image_workdir(tmp_path)
  params = _abstract_params(config, tokenizer)
  with pytest.raises(errors.UserError, match='is not a trained jaxret workdir .no config.json'):
    warm_start.Source(config, tokenizer, params)
  shutil.copy(demo_workdir[0] / 'config.json', tmp_path / 'config.json')  # Never trained.
  with pytest.raises(errors.UserError, match='is not a trained jaxret workdir: no checkpoints'):
    warm_start.Source(config, tokenizer, params)


def test_methods_benchmark_reports_the_video_towers_step_time_and_memory(tmp_path):
  out = tmp_path / 'methods.json'
  result = subprocess.run(
      [sys.executable, '-m', 'benchmarks.methods', '--methods=video', '--runlocal',
       '--rounds=2', f'--out={out}'],
      cwd=REPO, env=subprocess_env(1), capture_output=True, text=True, timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  (entry,) = json.loads(out.read_text())['methods']
  assert entry['method'] == 'video' and 0 < entry['step_seconds_median'] <= entry[
      'step_seconds_max']
  assert entry['peak_bytes_per_device'] == (entry['temp_bytes_per_device']
                                            + entry['argument_bytes_per_device'])
  # The step's arguments hold the state and a batch of clips (float32), not of images.
  config = load_config('video', 'runlocal')
  clips = config.batch_size * config.data.num_frames * config.data.image_size**2 * 3 * 4
  assert clips < entry['argument_bytes_per_device'] < 2 * clips
  assert entry['temp_bytes_per_device'] > 0
  assert f'{entry["peak_bytes_per_device"] / 2**20:.1f}' in result.stdout


def test_fast_and_slow_on_video_distils_from_a_video_captioner_and_reranks(tmp_path):
  """configs/video.py:method=caption is the slow model over space-time tokens;
  method=distill distils the video dual encoder from it, and its evaluation
  compares Fast distilled, Slow and Fast+Slow on the test clips."""
  from conftest import run_main  # pylint: disable=import-outside-toplevel
  slow_dir, workdir = tmp_path / 'slow', tmp_path / 'fast'
  run_main('--mode=train', '--config=configs/video.py:runlocal,method=caption,steps=1',
           f'--workdir={slow_dir}', '--config.eval_every=0')
  run_main('--mode=train', f'--config=configs/video.py:runlocal,method=distill,steps=2,'
           f'slow={slow_dir},candidates=student', f'--workdir={workdir}',
           '--config.eval_every=0')
  config = workdir_config.load(str(workdir))
  assert (config.data.source, config.loss.name, config.loss.teacher) == (
      'builtin_video', 'distill', str(slow_dir))
  run_main('--mode=eval', f'--workdir={workdir}')
  with open(workdir / 'eval' / 'fast_slow.json') as f:
    report = json.load(f)
  assert [(row['name'], row['k']) for row in report['rows']] == [
      ('Fast distilled', None), ('Slow', None), ('Fast+Slow', 5), ('Fast+Slow', 10)]
  assert report['slow_model'] == 'SlowCaptioner' and report['gallery'] == config.data.num_test
  fast, _, top5, top10 = report['rows']
  # Re-ranking reorders only the top K: from K on, recall is the fast model's.
  assert top5['t2i/R@5'] == fast['t2i/R@5'] and top5['t2i/R@10'] == fast['t2i/R@10']
  assert top10['t2i/R@10'] == fast['t2i/R@10']

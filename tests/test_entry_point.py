"""The command line end to end: every mode and the workdir contract (refusals: test_bad_input.py)."""

import json
import os

import numpy as np

from conftest import digest
from conftest import run_main

TINY = 'configs/demo.py:runlocal'


def test_demo_writes_the_workdir_contract(demo_workdir):
  workdir, stdout = demo_workdir
  config = json.loads((workdir / 'config.json').read_text())
  for key in ('seed', 'batch_size', 'total_steps', 'model', 'loss', 'data', 'eval_every',
              'checkpoint_every'):
    assert key in config
  records = [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]
  assert [r['step'] for r in records] == [2, 4]
  for record in records:
    assert {'loss', 'learning_rate', 'examples_per_sec'} <= set(record)
  assert any(k.startswith('val/t2i/R@1') for k in records[-1])
  assert list((workdir / 'tensorboard').glob('events.out.tfevents.*'))
  assert sorted(os.listdir(workdir / 'checkpoints')) == ['2', '4']

  results = json.loads((workdir / 'eval' / 'results.json').read_text())
  for key in ('t2i/R@1', 't2i/R@5', 't2i/R@10', 'i2t/R@1', 'i2t/R@5', 'i2t/R@10',
              't2i/median_rank'):
    assert 0 <= results[key] <= 64
  assert results['step'] == 4 and results['num_images'] == 64

  with np.load(workdir / 'export' / 'embeddings.npz') as exported:
    assert exported['image_emb'].shape == (64, 32)
    assert exported['text_emb'].shape == (320, 32)
    assert exported['image_ids'].shape == (64,) and exported['text_image_ids'].shape == (320,)
    np.testing.assert_allclose(np.linalg.norm(exported['image_emb'], axis=1), 1, atol=1e-5)
    assert set(exported['text_image_ids'].tolist()) == set(exported['image_ids'].tolist())

  manifest = json.loads((workdir / 'index' / 'manifest.json').read_text())
  assert manifest['num_items'] == 64 and manifest['model_step'] == 4
  assert 'text→image' in stdout and 'query:' in stdout
  hits = [line for line in stdout.splitlines() if line.strip()[:3].strip().rstrip('.').isdigit()]
  assert len(hits) == 5
  assert list((workdir / 'query').glob('*.png'))


def test_query_mode_from_the_saved_config(demo_workdir):
  workdir, _ = demo_workdir
  before = digest(workdir / 'checkpoints')
  result = run_main('--mode=query', f'--workdir={workdir}', '--query=a big green cross', '--k=3')
  assert "query: 'a big green cross'" in result.stdout
  assert len([l for l in result.stdout.splitlines() if ' id ' in l]) == 3
  assert digest(workdir / 'checkpoints') == before


def test_saved_config_with_overrides(demo_workdir, demo_copy):
  """configs/workdir.py:DIR is the saved config, so --config.KEY=VALUE applies to it."""
  workdir = demo_copy
  run_main('--mode=eval', f'--config=configs/workdir.py:{workdir}', f'--workdir={workdir}',
           '--config.eval.split=val')
  results = json.loads((workdir / 'eval' / 'results.json').read_text())
  assert results['split'] == 'val' and results['step'] == 4
  assert json.loads((demo_workdir[0] / 'eval' / 'results.json').read_text())['split'] == 'test'


def test_one_train_step_on_eight_devices_then_resume(tmp_path):
  run_main('--mode=train', f'--config={TINY}', f'--workdir={tmp_path}',
           '--config.total_steps=1', '--config.checkpoint_every=1', devices=8)
  assert os.listdir(tmp_path / 'checkpoints') == ['1']
  result = run_main('--mode=train', f'--config={TINY}', f'--workdir={tmp_path}',
                    '--config.total_steps=2', '--config.checkpoint_every=1', devices=8)
  assert 'resumed from step 1' in result.stdout
  assert '2' in os.listdir(tmp_path / 'checkpoints')

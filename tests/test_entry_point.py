"""The command line end to end: every mode and the workdir contract (refusals: test_bad_input.py)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO
from conftest import digest
from conftest import run_main
from conftest import subprocess_env

TINY = 'configs/demo.py:runlocal'


def _numpy_recall(image_emb, image_ids, text_emb, text_image_ids):
  """Recall@1/5/10 and median rank in both directions, apart from jaxret.evaluate: each
  caption's image's place in its sorted row; each image's first caption in its sorted row."""
  scores = np.float64(text_emb) @ np.float64(image_emb).T
  t2i = np.array([np.flatnonzero(image_ids[np.argsort(-row, kind='stable')] == image_id)[0]
                  for row, image_id in zip(scores, text_image_ids)])
  i2t = np.array([np.flatnonzero(text_image_ids[np.argsort(-row, kind='stable')] == image_id)[0]
                  for row, image_id in zip(scores.T, image_ids)])
  expected = {}
  for name, ranks in (('t2i', t2i), ('i2t', i2t)):
    expected.update({f'{name}/R@{k}': float(np.mean(ranks < k)) for k in (1, 5, 10)})
    expected[f'{name}/median_rank'] = float(np.median(ranks + 1))
  return expected


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
  assert results['step'] == 4 and results['num_images'] == 64 and results['num_texts'] == 320
  assert results['chance_t2i_R1'] == 1 / 64

  with np.load(workdir / 'export' / 'embeddings.npz') as exported:
    assert exported['image_emb'].shape == (64, 32)
    assert exported['text_emb'].shape == (320, 32)
    assert exported['image_ids'].shape == (64,) and exported['text_image_ids'].shape == (320,)
    np.testing.assert_allclose(np.linalg.norm(exported['image_emb'], axis=1), 1, atol=1e-5)
    assert set(exported['text_image_ids'].tolist()) == set(exported['image_ids'].tolist())
    # The evaluation and the export embed the same test split with the same checkpoint:
    # its Recall@K and median ranks, recomputed from the exported embeddings.
    expected = _numpy_recall(exported['image_emb'], exported['image_ids'],
                             exported['text_emb'], exported['text_image_ids'])
  for key, value in expected.items():
    # Within one query, or one rank for the median: the two embed in other batches,
    # which may turn a near tie.
    tolerance = 1.0 if key.endswith('median_rank') else 1.01 / (320 if 't2i' in key else 64)
    assert results[key] == pytest.approx(value, abs=tolerance), key

  manifest = json.loads((workdir / 'index' / 'manifest.json').read_text())
  assert manifest['num_items'] == 64 and manifest['model_step'] == 4
  assert 'text→image' in stdout and 'query:' in stdout
  hits = [line for line in stdout.splitlines() if line.strip()[:3].strip().rstrip('.').isdigit()]
  assert len(hits) == 5
  assert list((workdir / 'query').glob('*.png'))


def test_the_jaxret_command_with_a_config_that_builds_on_another(demo_workdir, demo_copy):
  """`jaxret` (pyproject.toml's console script, `jaxret.main:entry`) has no `configs`
  package on sys.path: blocked here, configs/clip.py (built on configs/demo.py) still
  loads, and evaluates the demo's checkpoint to the demo's own results."""
  script = ("import sys; sys.modules['configs'] = None; sys.argv[0] = 'jaxret'; "
            'from jaxret.main import entry; entry()')
  result = subprocess.run(
      [sys.executable, '-c', script, '--mode=eval', '--config=configs/clip.py:runlocal',
       f'--workdir={demo_copy}'],
      cwd=REPO, env=subprocess_env(1), capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr
  assert '| text→image |' in result.stdout
  results = json.loads((demo_copy / 'eval' / 'results.json').read_text())
  demo_results = json.loads((demo_workdir[0] / 'eval' / 'results.json').read_text())
  for key in ('t2i/R@1', 't2i/R@5', 't2i/R@10', 'i2t/R@1', 't2i/median_rank', 'step'):
    assert results[key] == demo_results[key], key


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

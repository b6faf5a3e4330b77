"""Bad input in every mode: a one-line reason, a refusing exit code, an untouched workdir."""

import json

import ml_collections
import numpy as np
import pytest

from conftest import digest
from conftest import run_main
from jaxret.index import store

TINY = '--config=configs/demo.py:runlocal'


def _refused(result, *fragments):
  assert result.returncode != 0
  lines = [l for l in result.stderr.strip().splitlines() if l.startswith('error:')]
  assert len(lines) == 1, result.stderr
  for fragment in fragments:
    assert fragment in lines[0], lines[0]
  assert 'Traceback' not in result.stderr


# (arguments, fragments of the one-line reason). Run in an empty workdir, which
# must stay empty.
FRESH_CASES = [
    (('--mode=train', TINY, '--config.optimizer.lerning_rate=0.1'), ('lerning_rate',)),
    (('--mode=train', TINY, '--config.batch_size=many'), ('batch_size',)),
    (('--mode=train', '--config=configs/demo.py:runlcal'), ('runlcal',)),
    (('--mode=train', TINY, '--config.data.image_size=60'), ('image_size=60', 'patch size 8')),
    (('--mode=train', TINY, '--config.batch_size=30'),
     ('batch_size=30 is not divisible by the 8 devices',)),
    (('--mode=train', TINY, "--config.mesh=(('data', 3),)"), ('3 devices but there are 8',)),
    (('--mode=train', TINY, '--config.loss.name=clipp'), ("unknown loss 'clipp'",)),
    # Another method's loss settings under CLIP's name: no setting is silently unused.
    (('--mode=train', '--config=configs/wenlan.py:runlocal', '--config.loss.name=clip'),
     ("loss.exclude_same_id, loss.momentum, loss.queue_init, loss.queue_size, "
      "loss.temperature are not settings of loss 'clip' (its settings: none)",)),
    (('--mode=train', TINY, '--config.model.name=dual'), ("unknown model 'dual'",)),
    (('--mode=train', TINY, '--config.data.source=nowhere'), ("unknown data.source 'nowhere'",)),
    (('--mode=train', TINY, '--config.on_nonfinite=ignore'), ("on_nonfinite='ignore'",)),
    (('--mode=train',), ('needs --config',)),
    (('--mode=fly', TINY), ('--mode',)),
    (('--mode=eval', TINY), ('run --mode=train first',)),
    (('--mode=export', TINY), ('run --mode=train first',)),
    (('--mode=index', TINY), ('run --mode=export first',)),
    (('--mode=query', TINY, '--query=a red circle'), ('run --mode=index first',)),
    (('--mode=query',), ('no config.json',)),
    (('--mode=eval', '--config=configs/workdir.py'), ('needs the workdir after a colon',)),
    (('--mode=eval', '--config=configs/workdir.py:/no/such/run', '--config.eval.split=val'),
     ('no config.json in /no/such/run',)),
]


@pytest.mark.parametrize('args, fragments', FRESH_CASES, ids=lambda v: str(v)[:60])
def test_refused_in_an_empty_workdir(tmp_path, args, fragments):
  result = run_main(*args, f'--workdir={tmp_path}', devices=8, check=False)
  _refused(result, *fragments)
  assert not list(tmp_path.iterdir())


def test_missing_workdir_flag_is_refused():
  _refused(run_main('--mode=eval', TINY, check=False), '--workdir is required')


# Against a trained workdir (after the demo), which must not change.
TRAINED_CASES = [
    (('--query=   ',), ('empty query',)),
    (('--query=a red circle', '--k=65'), ('k=65', 'gallery has 64')),
    (('--query=a red circle', '--k=0'), ('k=0',)),
    (('--mode=eval', '--step=3'), ('no checkpoint for step 3', 'available: [2, 4]')),
    (('--mode=export', '--step=7'), ('no checkpoint for step 7',)),
]


@pytest.mark.parametrize('args, fragments', TRAINED_CASES, ids=lambda v: str(v)[:60])
def test_refused_against_a_trained_workdir(demo_workdir, args, fragments):
  workdir, _ = demo_workdir
  before = digest(workdir)
  mode = [] if any(a.startswith('--mode') for a in args) else ['--mode=query']
  result = run_main(*mode, *args, f'--workdir={workdir}', check=False)
  _refused(result, *fragments)
  assert digest(workdir) == before


def _index_config():
  return ml_collections.ConfigDict(dict(
      method='brute_force', brute_force_below=10_000, num_leaves=0, num_leaves_to_search=0,
      reorder=0, dims_per_block=2, anisotropic_threshold=0.2))


def test_config_from_an_older_jaxret_is_refused(demo_copy):
  """A saved config.json without a key added since (here `mesh`): one line naming it."""
  workdir = demo_copy
  config = json.loads((workdir / 'config.json').read_text())
  del config['mesh']
  (workdir / 'config.json').write_text(json.dumps(config))
  before = digest(workdir)
  _refused(run_main('--mode=eval', f'--workdir={workdir}', check=False),
           "no key 'mesh'", 'older jaxret')
  assert digest(workdir) == before


def test_index_of_another_model_is_refused(demo_copy):
  workdir = demo_copy
  other = np.random.default_rng(0).normal(size=(64, 16)).astype(np.float32)
  store.build(other, np.arange(64), step=4, index_config=_index_config(),
              out_dir=str(workdir / 'index'))
  before = digest(workdir)
  result = run_main('--mode=query', '--query=a red circle', f'--workdir={workdir}', check=False)
  _refused(result, '16-d embeddings', '32-d', 'rebuild it with --mode=index')
  assert digest(workdir) == before


def test_damaged_index_is_refused(demo_copy):
  workdir = demo_copy
  with open(workdir / 'index' / 'ids.npy', 'r+b') as f:
    f.seek(-1, 2)
    f.write(b'\x07')
  before = digest(workdir)
  result = run_main('--mode=query', '--query=a red circle', f'--workdir={workdir}', check=False)
  _refused(result, 'damaged', 'ids.npy')
  assert digest(workdir) == before

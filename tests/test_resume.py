"""Reliability: exact resume after SIGKILL, SIGTERM preemption, 8<->1 device
restores, numeric guards, and a workdir that cannot be written."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from conftest import REPO
from conftest import run_main
from conftest import subprocess_env
from jaxret.config import workdir as workdir_config
from jaxret.inference import restore as restore_lib

STEPS = 60
ARGS = ('--mode=train', '--config=configs/demo.py:runlocal', f'--config.total_steps={STEPS}',
        '--config.checkpoint_every=5', '--config.log_every=5', '--config.keep_checkpoints=3',
        '--config.eval_every=0')


# Runs the entry point with files limited to 16 kB (a full disk that even root
# cannot write past): writes beyond the limit fail with EFBIG. The checkpoint's
# metadata files (_METADATA, _sharding) alone are larger, whatever the timing of
# the data files' flushes, while the logs and config files stay below it.
LIMITED = ('import resource, runpy, signal;'
           'signal.signal(signal.SIGXFSZ, signal.SIG_IGN);'
           'resource.setrlimit(resource.RLIMIT_FSIZE, (16_000, 16_000));'
           'runpy.run_module("jaxret.main", run_name="__main__")')


def _start(workdir, *extra, limit_file_size=False):
  env = subprocess_env(1)
  if limit_file_size:  # Its truncated cache entries would only cost the others a recompile.
    env['JAX_ENABLE_COMPILATION_CACHE'] = 'false'
  program = ['-c', LIMITED] if limit_file_size else ['-m', 'jaxret.main']
  return subprocess.Popen([sys.executable, *program, *ARGS, f'--workdir={workdir}', *extra],
                          cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)


def _wait_for(path, process, timeout=300):
  deadline = time.time() + timeout
  while not path.exists():
    assert process.poll() is None, process.communicate()
    assert time.time() < deadline, f'{path} did not appear'
    time.sleep(0.01)


def _params(workdir, step=None):
  return jax.device_get(restore_lib.restore(workdir_config.load(str(workdir)), str(workdir),
                                          step).params)


def _steps(workdir):
  return sorted(int(name) for name in os.listdir(workdir / 'checkpoints') if name.isdigit())


def _assert_bit_identical(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
  """An uninterrupted run: its final parameters and metrics."""
  workdir = tmp_path_factory.mktemp('reference')
  run_main(*ARGS, f'--workdir={workdir}')
  return workdir


def test_sigkill_mid_run_then_resume_is_bit_identical(tmp_path, reference):
  process = _start(tmp_path)
  _wait_for(tmp_path / 'checkpoints' / '15', process)
  time.sleep(0.05)  # Land somewhere inside the following steps or save.
  process.kill()
  process.communicate()
  assert process.returncode == -signal.SIGKILL
  assert max(_steps(tmp_path)) < STEPS
  result = run_main(*ARGS, f'--workdir={tmp_path}')
  assert 'resumed from step' in result.stdout
  _assert_bit_identical(_params(reference), _params(tmp_path))
  logged = [json.loads(l) for l in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
  expected = [json.loads(l) for l in (reference / 'metrics.jsonl').read_text().splitlines()]
  assert [r['step'] for r in logged] == [r['step'] for r in expected]  # Each step once.
  assert [r['loss'] for r in logged] == [r['loss'] for r in expected]


def test_sigterm_saves_at_the_next_step_and_exits_zero(tmp_path, reference):
  process = _start(tmp_path)
  _wait_for(tmp_path / 'checkpoints' / '5', process)
  process.send_signal(signal.SIGTERM)
  stdout, stderr = process.communicate(timeout=120)
  assert process.returncode == 0, stderr
  (line,) = [l for l in stdout.splitlines() if l.startswith('preempted:')]
  step = int(line.split('checkpoint of step ')[1].split()[0])
  assert 5 <= step < STEPS and max(_steps(tmp_path)) == step
  assert not [n for n in os.listdir(tmp_path / 'checkpoints') if 'tmp' in n]
  run_main(*ARGS, f'--workdir={tmp_path}')
  _assert_bit_identical(_params(reference), _params(tmp_path))


def test_checkpoints_restore_across_device_counts(tmp_path):
  """Written on 8 devices, evaluated on 8 and on 1 (and the reverse): same results."""
  for devices in (8, 1):
    workdir = tmp_path / f'trained_on_{devices}'
    run_main('--mode=train', '--config=configs/demo.py:runlocal', f'--workdir={workdir}',
             devices=devices)
    results = []
    for eval_devices in (8, 1):
      run_main('--mode=eval', f'--workdir={workdir}', devices=eval_devices)
      results.append(json.loads((workdir / 'eval' / 'results.json').read_text()))
    for key in ('t2i/R@1', 't2i/R@5', 'i2t/R@1', 't2i/median_rank'):
      assert results[0][key] == pytest.approx(results[1][key], abs=1e-9)
  # And training resumes on another device count.
  result = run_main('--mode=train', '--config=configs/demo.py:runlocal',
                    f'--workdir={tmp_path / "trained_on_8"}', '--config.total_steps=6', devices=1)
  assert 'resumed from step 4' in result.stdout


def test_nonfinite_loss_stops_without_saving_it(tmp_path):
  result = run_main(*ARGS, f'--workdir={tmp_path}', '--config.optimizer.lr=1e30',
                    '--config.checkpoint_every=1', check=False)
  assert result.returncode != 0
  (line,) = [l for l in result.stderr.splitlines() if l.startswith('error:')]
  assert 'the loss is nan' in line or 'is not finite' in line
  bad_step = int(line.split('step ')[1].split(':')[0])
  assert max(_steps(tmp_path)) == bad_step - 1  # Nothing from the bad step on.
  for value in jax.tree.leaves(_params(tmp_path)):
    assert np.isfinite(np.asarray(value)).all()


def test_nonfinite_steps_can_be_skipped(tmp_path):
  result = run_main(*ARGS, f'--workdir={tmp_path}', '--config.optimizer.lr=1e30',
                    '--config.total_steps=6', '--config.on_nonfinite=skip')
  skipped = [l for l in result.stdout.splitlines() if 'step skipped' in l]
  assert skipped
  assert max(_steps(tmp_path)) == 6
  for value in jax.tree.leaves(_params(tmp_path)):
    assert np.isfinite(np.asarray(value)).all()


def test_full_disk_gives_a_clear_error_and_keeps_the_last_checkpoint(tmp_path):
  run_main(*ARGS, f'--workdir={tmp_path}', '--config.total_steps=5')
  before = _params(tmp_path)
  process = _start(tmp_path, '--config.total_steps=10', limit_file_size=True)
  stdout, stderr = process.communicate(timeout=300)
  assert process.returncode != 0, stdout
  lines = [l for l in stderr.splitlines() if l.startswith('error:')]
  assert len(lines) == 1, f'{stderr[:3000]}\n[...]\n{stderr[-3000:]}'
  assert 'could not write the checkpoint of step 10' in lines[0] and 'intact' in lines[0]
  # The aborted save's late writes stay quiet, and the error is the last line.
  assert 'Event loop is closed' not in stderr
  assert stderr.strip().splitlines()[-1] == lines[0]
  assert _steps(tmp_path) == [5]
  _assert_bit_identical(before, _params(tmp_path))


def test_unwritable_workdir_is_refused_before_training(tmp_path):
  # A workdir below a regular file cannot be created, for root too (a read-only
  # directory would not stop root).
  (tmp_path / 'file').write_text('not a directory')
  result = run_main(*ARGS, f'--workdir={tmp_path / "file" / "run"}', check=False)
  assert result.returncode != 0 and 'cannot write to --workdir' in result.stderr
  assert result.stderr.strip().splitlines()[-1].startswith('error: cannot write to --workdir')
  assert sorted(p.name for p in tmp_path.iterdir()) == ['file']

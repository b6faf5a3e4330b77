"""Two processes with 4 CPU devices each (gloo collectives) match one process with 8."""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np

from conftest import REPO
from conftest import run_main
from conftest import subprocess_env
from jaxret.config import workdir as workdir_config
from jaxret.inference import restore as restore_lib

ARGS = ('--mode=train', '--config=configs/demo.py:runlocal', '--config.total_steps=3',
        '--config.log_every=1', '--config.checkpoint_every=3')


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _losses(workdir):
  lines = (workdir / 'metrics.jsonl').read_text().splitlines()
  return [json.loads(line)['loss'] for line in lines]


def test_two_processes_match_one(tmp_path):
  single, multi = tmp_path / 'single', tmp_path / 'multi'
  run_main(*ARGS, f'--workdir={single}', devices=8)

  port = _free_port()
  env = subprocess_env(4)
  processes = [subprocess.Popen(
      [sys.executable, '-m', 'jaxret.main', *ARGS, f'--workdir={multi}',
       f'--coordinator_address=127.0.0.1:{port}', '--num_processes=2', f'--process_id={i}'],
      cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
      for i in range(2)]
  outputs = [p.communicate(timeout=300) for p in processes]
  for process, (stdout, stderr) in zip(processes, outputs):
    assert process.returncode == 0, f'{stdout}\n{stderr}'
  assert 'on 8 devices' in outputs[0][0] and '(64 per process)' in outputs[0][0]
  assert 'step 1/3' in outputs[0][0] and 'step 1/3' not in outputs[1][0]  # Process 0 logs.

  np.testing.assert_allclose(_losses(single), _losses(multi), rtol=1e-5, atol=1e-5)
  params = [restore_lib.restore(workdir_config.load(str(w)), str(w)).params for w in (single, multi)]
  for a, b in zip(jax.tree.leaves(params[0]), jax.tree.leaves(params[1])):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)
  assert sorted(os.listdir(multi / 'checkpoints' / '3' / 'data')) == [
      'commit_success.txt', 'process_0-of-2.json', 'process_1-of-2.json']

"""Launch scripts: valid bash, and the commands their --dry-run prints."""

import shlex
import subprocess

import pytest

from conftest import REPO

SCRIPTS = sorted(p.name for p in (REPO / 'launch').iterdir() if p.suffix in ('.sh', '.sbatch'))
MAIN = ('--config=configs/demo.py', '--workdir=/tmp/run', '--config.batch_size=64')


def _dry_run(script, *args, check=True):
  result = subprocess.run(['bash', str(REPO / 'launch' / script), '--dry-run', *args],
                          capture_output=True, text=True, cwd=REPO, timeout=60)
  if check:
    assert result.returncode == 0, result.stderr
  return result


def _commands(stdout):
  return [shlex.split(line) for line in stdout.splitlines() if not line.startswith('export ')]


@pytest.mark.parametrize('script', SCRIPTS)
def test_scripts_are_valid_bash(script):
  result = subprocess.run(['bash', '-n', str(REPO / 'launch' / script)], capture_output=True,
                          text=True)
  assert result.returncode == 0, result.stderr


def test_local_cpu_splits_devices_over_processes():
  result = _dry_run('local_cpu.sh', '--devices=8', '--processes=2', '--port=23456', *MAIN)
  assert 'XLA_FLAGS=--xla_force_host_platform_device_count=4' in result.stdout
  commands = _commands(result.stdout)
  assert len(commands) == 2
  for i, command in enumerate(commands):
    assert command[:4] == ['python', '-m', 'jaxret.main', '--mode=train']
    assert all(arg in command for arg in MAIN)
    assert '--coordinator_address=127.0.0.1:23456' in command
    assert '--num_processes=2' in command and f'--process_id={i}' in command


def test_local_cpu_single_process_keeps_the_mode():
  result = _dry_run('local_cpu.sh', '--devices=2', '--mode=eval', *MAIN)
  (command,) = _commands(result.stdout)
  assert command == ['python', '-m', 'jaxret.main', '--mode=eval', *MAIN]


def test_gpu_host_picks_bfloat16_and_memory_flags():
  result = _dry_run('gpu_host.sh', *MAIN)
  assert 'XLA_PYTHON_CLIENT_MEM_FRACTION=0.9' in result.stdout
  assert '--xla_gpu_enable_latency_hiding_scheduler=true' in result.stdout
  (command,) = _commands(result.stdout)
  assert command[-1] == '--config.model.dtype=bfloat16'
  result = _dry_run('gpu_host.sh', *MAIN, '--config.model.dtype=float32')
  (command,) = _commands(result.stdout)
  assert '--config.model.dtype=bfloat16' not in command


def test_tpu_pod_copies_then_runs_on_all_workers():
  result = _dry_run('tpu_pod.sh', '--tpu=pod', '--zone=us-central2-b', *MAIN)
  copy, ssh = _commands(result.stdout)
  assert copy[:5] == ['gcloud', 'compute', 'tpus', 'tpu-vm', 'scp']
  assert '--worker=all' in copy and '--zone=us-central2-b' in copy
  assert ssh[:6] == ['gcloud', 'compute', 'tpus', 'tpu-vm', 'ssh', 'pod']
  assert '--worker=all' in ssh
  (remote,) = [arg for arg in ssh if arg.startswith('--command=')]
  assert 'python3 -m jaxret.main --mode=train ' + ' '.join(MAIN) in remote


def test_slurm_one_process_per_gpu_or_per_node():
  (command,) = _commands(_dry_run('slurm_gpu.sbatch', *MAIN).stdout)
  assert command[:3] == ['srun', '--ntasks-per-node=8', '--gpus-per-task=1']
  assert command[3:7] == ['python', '-m', 'jaxret.main', '--mode=train']
  (command,) = _commands(_dry_run('slurm_gpu.sbatch', '--per-node', *MAIN).stdout)
  assert command[:3] == ['srun', '--ntasks-per-node=1', '--gpus-per-task=8']


@pytest.mark.parametrize('script, args', [
    ('local_cpu.sh', ('--workdir=/tmp/run',)),
    ('tpu_pod.sh', MAIN),
    ('local_cpu.sh', ('--devices=6', '--processes=4', *MAIN)),
])
def test_missing_or_bad_arguments_are_refused(script, args):
  result = _dry_run(script, *args, check=False)
  assert result.returncode == 2 and result.stderr.startswith('error:')

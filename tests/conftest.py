"""Test setup: 8 simulated CPU devices, set before JAX is imported anywhere."""

import os

os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '')
                           + ' --xla_force_host_platform_device_count=8').strip()
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import pathlib  # pylint: disable=wrong-import-position
import subprocess  # pylint: disable=wrong-import-position
import sys  # pylint: disable=wrong-import-position

import pytest  # pylint: disable=wrong-import-position

REPO = pathlib.Path(__file__).resolve().parents[1]


def run_main(*args, devices=1, check=True):
  """Runs `python -m jaxret.main ARGS` in a subprocess on `devices` CPU devices."""
  env = dict(os.environ)
  env['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={devices}'
  result = subprocess.run([sys.executable, '-m', 'jaxret.main', *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
  if check and result.returncode != 0:
    raise AssertionError(f'jaxret.main {args} failed ({result.returncode}):\n'
                         f'{result.stdout}\n{result.stderr}')
  return result


def digest(root):
  """Content hashes of every file under `root` (to prove nothing was touched)."""
  import hashlib  # pylint: disable=import-outside-toplevel
  digests = {}
  for path in sorted(pathlib.Path(root).rglob('*')):
    if path.is_file():
      digests[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
  return digests


@pytest.fixture(scope='session')
def demo_workdir(tmp_path_factory):
  """A workdir after `--mode=demo` of the runlocal config: (path, stdout)."""
  workdir = tmp_path_factory.mktemp('demo')
  result = run_main('--mode=demo', '--config=configs/demo.py:runlocal', f'--workdir={workdir}')
  return workdir, result.stdout


@pytest.fixture(scope='session')
def tiny_config():
  from configs import demo  # pylint: disable=import-outside-toplevel
  return demo.get_config('runlocal')

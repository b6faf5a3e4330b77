"""Test setup: 8 simulated CPU devices, set before JAX is imported anywhere."""

import os

# The tests' programs are tiny, so XLA's compile time is most of their run
# time: LLVM's optimisations (level 0) are skipped for it, in this process and
# in every subprocess the tests start (`subprocess_env`).
XLA_TEST_FLAGS = '--xla_backend_optimization_level=0'
os.environ['XLA_FLAGS'] = ' '.join(
    [os.environ.get('XLA_FLAGS', ''), XLA_TEST_FLAGS,
     '--xla_force_host_platform_device_count=8']).strip()
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import pathlib  # pylint: disable=wrong-import-position
import shutil  # pylint: disable=wrong-import-position
import subprocess  # pylint: disable=wrong-import-position
import sys  # pylint: disable=wrong-import-position
import tempfile  # pylint: disable=wrong-import-position

# Most of the suite's time is XLA compiling the same small programs again in
# each test's subprocess. JAX's persistent compilation cache shares them: one
# directory per session, made by the first process (pytest or xdist's
# controller) and inherited by the xdist workers and every subprocess. A cached
# executable is the one a fresh compilation would give, so results do not change.
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  os.environ['JAX_COMPILATION_CACHE_DIR'] = tempfile.mkdtemp(prefix='jaxret-test-xla-cache-')
  os.environ['JAXRET_TEST_OWNS_CACHE'] = os.environ['JAX_COMPILATION_CACHE_DIR']
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0.1')

import pytest  # pylint: disable=wrong-import-position

REPO = pathlib.Path(__file__).resolve().parents[1]


def pytest_unconfigure(config):
  """The process that made the compilation cache removes it at the end."""
  owned = os.environ.get('JAXRET_TEST_OWNS_CACHE')
  if owned and not hasattr(config, 'workerinput'):
    shutil.rmtree(owned, ignore_errors=True)


def subprocess_env(devices):
  """The environment of a subprocess that runs on `devices` simulated CPU devices."""
  return dict(os.environ,
              XLA_FLAGS=f'{XLA_TEST_FLAGS} --xla_force_host_platform_device_count={devices}')


def run_main(*args, devices=1, check=True):
  """Runs `python -m jaxret.main ARGS` in a subprocess on `devices` CPU devices."""
  env = subprocess_env(devices)
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


@pytest.fixture
def demo_copy(demo_workdir, tmp_path):
  """A copy of the demo workdir, for a test that changes it (the session's stays as it is)."""
  workdir = tmp_path / 'copy'
  shutil.copytree(demo_workdir[0], workdir)
  return workdir


@pytest.fixture(scope='session')
def tiny_config():
  from configs import demo  # pylint: disable=import-outside-toplevel
  return demo.get_config('runlocal')

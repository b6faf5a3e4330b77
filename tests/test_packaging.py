"""The package's declaration (pyproject.toml) and the quick start's requirements.txt agree, and
config files load as files, as the installed `jaxret` command loads them."""

import subprocess
import sys
import tomllib

from conftest import REPO
from conftest import subprocess_env


def _pyproject():
  return tomllib.loads((REPO / 'pyproject.toml').read_text())


def _requirements_txt():
  text = (REPO / 'requirements.txt').read_text()
  lines = (line.split('#')[0].strip() for line in text.splitlines())
  return [line for line in lines if line]


def test_requirements_txt_is_the_dependencies_and_the_test_extra():
  project = _pyproject()['project']
  declared = project['dependencies'] + project['optional-dependencies']['test']
  listed = _requirements_txt()
  assert len(set(listed)) == len(listed), 'requirements.txt names a requirement twice'
  assert len(set(declared)) == len(declared), 'pyproject.toml names a requirement twice'
  assert set(listed) == set(declared), (
      f'only in requirements.txt: {sorted(set(listed) - set(declared))}; '
      f'only in pyproject.toml: {sorted(set(declared) - set(listed))}')


def test_the_console_script_is_the_entry_function():
  assert _pyproject()['project']['scripts'] == {'jaxret': 'jaxret.main:entry'}
  from jaxret import main  # pylint: disable=import-outside-toplevel
  assert callable(main.entry)


def test_every_config_file_loads_without_the_configs_package():
  """The installed command has no `configs` package on sys.path: blocked here, every config
  file (those that build on another included) still gives its config."""
  script = '\n'.join([
      'import pathlib, sys',
      "sys.modules['configs'] = None  # `import configs` raises, as under the installed command.",
      'from jaxret.config import config_file',
      'for path in sorted(pathlib.Path(sys.argv[1]).glob("*.py")):',
      "  if path.stem == 'workdir':  # Needs a workdir after the colon.",
      '    config_file.load(path)',
      '    continue',
      "  config = config_file.load(path).get_config('runlocal')",
      "  print(path.stem, config.loss.name)",
  ])
  result = subprocess.run([sys.executable, '-c', script, str(REPO / 'configs')], cwd=REPO,
                          env=subprocess_env(1), capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr
  loaded = dict(line.split() for line in result.stdout.splitlines())
  expected = {path.stem for path in (REPO / 'configs').glob('*.py')} - {'workdir'}
  assert set(loaded) == expected
  # Those that take another config file: each still names its own method.
  for name in ('irt_image', 'caption', 'distill', 'albef'):
    assert loaded[name] == name

"""jaxret's entry point.

  python -m jaxret.main --mode=MODE --config=configs/NAME.py[:ARGS] --workdir=DIR \
      [--config.KEY=VALUE ...]

or, after `pip install .`, the same flags to the `jaxret` command.

Modes: train (resumes from DIR's latest checkpoint), eval, export, index,
query (--query="a red circle" [--k=5]), demo (all of them in order), and serve
(an HTTP server and web page: --host=127.0.0.1 --port=8000).
Without --config, every mode except train uses DIR/config.json.
"""

import logging as std_logging
import sys
import traceback
import warnings

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from jaxret import errors
from jaxret.config import workdir as workdir_config
from jaxret.evaluate import run as evaluate_run
from jaxret.export import embeddings
from jaxret.export import index as index_lib
from jaxret.parallel import distributed
from jaxret.serve import query
from jaxret.serve import server
from jaxret.train import trainer

MODES = ('train', 'eval', 'export', 'index', 'query', 'demo', 'serve')

_MODE = flags.DEFINE_enum('mode', 'demo', MODES, 'What to run.')
_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints, logs and outputs.')
_STEP = flags.DEFINE_integer('step', None, 'Checkpoint step for eval/export (default: latest).')
_QUERY = flags.DEFINE_string('query', None, 'Text for --mode=query (default: config.query.text).')
_K = flags.DEFINE_integer('k', None,
                          'Number of results for --mode=query (default: config.query.k).')
_COORDINATOR = flags.DEFINE_string(
    'coordinator_address', None, 'host:port of process 0, for multi-process runs '
    '(auto-detected on TPU pods and SLURM).')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Number of processes.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process\'s index.')
# --mode=serve.
_HOST = flags.DEFINE_string('host', '127.0.0.1', 'Address --mode=serve listens on.')
_PORT = flags.DEFINE_integer('port', 8000, 'Port --mode=serve listens on (0: a free one).')
_WRITE_TOKEN_FILE = flags.DEFINE_string(
    'write_token_file', None, 'File holding the token that POST/DELETE /items need '
    '(default: $JAXRET_WRITE_TOKEN; neither: writes are disabled).')


def _one_line(error):
  """The error's message on one line; of an embedded traceback, only its last line."""
  message = str(error).strip().strip('\'"').replace('\\n', '\n')
  if 'Traceback (most recent call last)' in message:
    head, _, trace = message.partition('Traceback (most recent call last)')
    message = head.rstrip(' :') + ': ' + trace.strip().splitlines()[-1]
  return ' '.join(message.split())


def _missing_config_key(error):
  """The key whose lookup in an ml_collections config raised `error`, else None."""
  cause = error.__cause__ or error.__context__
  frames = traceback.extract_tb(error.__traceback__)
  if isinstance(cause, KeyError) and frames and 'ml_collections' in frames[-1].filename:
    return str(cause.args[0]).strip('\'"') if cause.args else '?'
  return None


def parse_flags(argv):
  """absl flag parsing, with config errors (an unknown key, a bad value) on one line."""
  # Library logs (orbax logs every save at INFO) only from ERROR up, unless
  # --verbosity asks for more.
  logging.set_verbosity(logging.ERROR)
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    sys.exit(f'error: {_one_line(e)}')
  except errors.UserError as e:  # From a config file's get_config (configs/workdir.py).
    sys.exit(f'error: {e}')
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    sys.exit(f'error: bad --config override: {_one_line(e)}; '
             'see the config file for the keys it has')


def _config(mode, workdir):
  if _CONFIG.value is not None:
    return _CONFIG.value
  if mode in ('train', 'demo'):
    raise errors.UserError(f'--mode={mode} needs --config=configs/NAME.py')
  return workdir_config.load(workdir)


def run(mode, config, workdir, step=None, query_text=None, k=None, host='127.0.0.1', port=8000,
        write_token_file=None):
  """Runs one mode (or all of them, for demo). Importable for tests and scripts."""
  query_text = config.query.text if query_text is None else query_text
  k = config.query.k if k is None else k
  if mode == 'query':
    query.check_text(query_text)  # Before any work.
  if mode in ('train', 'demo'):
    trainer.train(config, workdir)
  if mode in ('eval', 'demo'):
    results = evaluate_run.evaluate(config, workdir, step)
    print(f'{results["split"]} split, step {results["step"]}, {results["num_images"]} images, '
          f'{results["num_texts"]} captions (chance R@1 {100 * results["chance_t2i_R1"]:.2f}):')
    print(evaluate_run.format_table(results))
  if mode in ('export', 'demo'):
    path, export_step, shape = embeddings.export(config, workdir, step)
    print(f'exported {shape[0]} image embeddings ({shape[1]}-d) of step {export_step} to {path}')
  if mode in ('index', 'demo'):
    manifest = index_lib.build_index(config, workdir)
    print(f'indexed {manifest["num_items"]} images ({manifest["build_params"]["method"]}, '
          f'{manifest["build_seconds"]:.2f}s) in {workdir}/index')
    if 'texts' in manifest:
      print(f'indexed {manifest["texts"]["num_texts"]} captions '
            f'({manifest["texts"]["build_params"]["method"]}) in {workdir}/texts')
    if 'tokens' in manifest:
      tokens = manifest['tokens']
      print(f'stored {tokens["num_items"]} images\' patch tokens ({tokens["dtype"]}, '
            f'{tokens["bytes"] / 2**20:.2f} MiB) in {workdir}/tokens')
    if 'thumbnails' in manifest:
      made = manifest['thumbnails']
      print(f'made {made["num_items"]} animated thumbnails ({made["bytes"] / 2**20:.2f} MiB) '
            f'in {workdir}/thumbnails')
  if mode in ('query', 'demo'):
    query.query(config, workdir, query_text, k)
  if mode == 'serve':
    server.serve(config, workdir, host, port, write_token_file=write_token_file)


def _quiet_background_threads():
  """Keeps the error line the last one: what background threads would print after it
  until exit (a failed checkpoint save's abandoned writes, logged by orbax through absl
  and by asyncio, and its coroutines never awaited) says nothing the line does not."""
  logging.set_verbosity(logging.FATAL)
  std_logging.getLogger('asyncio').setLevel(std_logging.CRITICAL)
  warnings.filterwarnings('ignore', message='coroutine .* was never awaited',
                          category=RuntimeWarning)


def main(argv):
  if len(argv) > 1:
    sys.exit(f'error: unexpected arguments {argv[1:]}; flags look like --mode=train')
  if not _WORKDIR.value:
    sys.exit('error: --workdir is required, e.g. --workdir=/tmp/jaxret-demo')
  try:
    distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    config = _config(_MODE.value, _WORKDIR.value)
    run(_MODE.value, config, _WORKDIR.value, _STEP.value, _QUERY.value, _K.value,
        host=_HOST.value, port=_PORT.value, write_token_file=_WRITE_TOKEN_FILE.value)
  except (errors.UserError, errors.RunError) as e:
    _quiet_background_threads()
    sys.exit(f'error: {e}')
  except errors.Preempted as e:
    print(e, flush=True)  # A clean stop: the scheduler may restart the same command.
  except AttributeError as e:
    key = _missing_config_key(e)
    if key is None:
      raise
    # Typically a workdir's config.json written before the key existed.
    sys.exit(f"error: the config has no key '{key}' (a config.json written by an older "
             'jaxret lacks the keys added since): pass --config=configs/NAME.py, or retrain')


def entry():
  """The installed `jaxret` command (pyproject.toml's console script): `python -m jaxret.main`."""
  app.run(main, flags_parser=parse_flags)


if __name__ == '__main__':
  entry()

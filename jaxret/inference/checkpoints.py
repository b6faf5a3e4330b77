"""Checkpoints under `DIR/checkpoints/` with orbax: async saves, keep N, restore latest.

A checkpoint is a composite of `state` (the whole `TrainState`) and, when
training, `data` (the grain iterator's position), so resuming continues with
exactly the batches an uninterrupted run would have seen.
"""

import contextlib
import os
import sys

import grain
import jax
import orbax.checkpoint as ocp

from jaxret import errors

SUBDIR = 'checkpoints'


def directory(workdir):
  return os.path.join(os.path.abspath(workdir), SUBDIR)


def abstract_with_shardings(abstract_tree, shardings):
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      abstract_tree, shardings)


class Checkpoints:
  """A thin wrapper over `ocp.CheckpointManager` with the workdir's layout."""

  def __init__(self, workdir, keep=2, read_only=False):
    if read_only and not os.path.isdir(directory(workdir)):
      raise errors.UserError(f'no checkpoints in {workdir}; run --mode=train first')
    self._saving = None  # The step of the save started last (its writes may be pending).
    if not read_only:
      _quiet_aborted_saves()
    self.manager = ocp.CheckpointManager(
        directory(workdir),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=not read_only, read_only=read_only,
            # Remove what an interrupted save left behind (never a finished step).
            cleanup_tmp_directories=not read_only, enable_async_checkpointing=True))

  def latest_step(self):
    return self.manager.latest_step()

  def all_steps(self):
    return list(self.manager.all_steps())

  def save(self, step, state, data_iterator=None):
    """Starts an asynchronous save. Orbax writes into a temporary directory and
    renames it when complete, so a crash mid-save never leaves a checkpoint that
    `latest_step` would pick up."""
    items = {'state': ocp.args.StandardSave(state)}
    if data_iterator is not None:
      items['data'] = grain.checkpoint.CheckpointSave(data_iterator)
    self._saving = step
    with _write_errors(self.manager.directory, step):
      self.manager.save(step, args=ocp.args.Composite(**items))

  def _checked_step(self, step):
    step = self.latest_step() if step is None else step
    if step is None:
      raise errors.UserError('no checkpoint in the workdir; run --mode=train first')
    if step not in self.all_steps():
      raise errors.UserError(f'no checkpoint for step {step}; available: {self.all_steps()}')
    return step

  def restore(self, abstract_state, step=None, data_iterator=None):
    """Restores `state` (and the iterator in place) at `step` (default: latest).

    `abstract_state` carries the target shardings, so a checkpoint written on
    one device count restores onto another.
    """
    step = self._checked_step(step)
    items = {'state': ocp.args.StandardRestore(abstract_state)}
    if data_iterator is not None:
      items['data'] = grain.checkpoint.CheckpointRestore(data_iterator)
    return self.manager.restore(step, args=ocp.args.Composite(**items))['state']

  def restore_params(self, abstract_params, step=None):
    """Restores only the parameters (no optimizer state): `(params, step)`."""
    step = self._checked_step(step)
    target = {'params': abstract_params}
    restored = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
        item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
        partial_restore=True)))
    return restored['state']['params'], step

  def wait(self):
    """Waits for the pending save; a write that failed in the background raises here."""
    with _write_errors(self.manager.directory, self._saving):
      self.manager.wait_until_finished()

  def close(self):
    """Waits for the pending save, then stops orbax's threads (orbax's `close` does
    both). An error from either (a failed background write; the close of orbax's
    checkpointer and metadata stores) is reported in one line, never as a traceback."""
    with _write_errors(self.manager.directory, self._saving):
      self.manager.close()


_QUIET = []  # The hook `_quiet_aborted_saves` installed (at most one per process).


def _quiet_aborted_saves():
  """Keeps the late writes of a failed save from printing a traceback each.

  When one write of an async save fails (a full disk), orbax closes the save's
  event loop while tensorstore's other writes are still in flight; each of them
  then completes into the closed loop and Python prints its `RuntimeError('Event
  loop is closed')` as an unraisable exception: hundreds of tracebacks around
  the one-line error `_write_errors` reports. This drops exactly those and
  passes every other unraisable exception on."""
  if _QUIET:
    return
  previous = sys.unraisablehook

  def hook(unraisable):
    late = (isinstance(unraisable.exc_value, RuntimeError)
            and str(unraisable.exc_value) == 'Event loop is closed')
    if not late:
      previous(unraisable)

  sys.unraisablehook = hook
  _QUIET.append(hook)


@contextlib.contextmanager
def _write_errors(where, step):
  """Turns a failed checkpoint write (disk full, no permission) into one clear error.

  Any exception: a write that fails in orbax's background threads reaches the
  caller as whatever the failing layer raised (OSError, tensorstore's
  ValueError, a RuntimeError wrapping either, ...)."""
  try:
    yield
  except (errors.UserError, errors.RunError):
    raise
  except Exception as e:  # pylint: disable=broad-exception-caught
    reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise errors.RunError(
        f'could not write the checkpoint of step {step} under {where}: {reason[:300]}; free disk '
        'space or pick a writable --workdir (earlier checkpoints are intact)') from e

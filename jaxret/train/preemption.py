"""Preemption: SIGTERM (or the multi-host preemption notice) asks for a checkpoint
at the next step boundary and a clean exit."""

import signal
import threading

import jax
from jax.experimental import multihost_utils


class PreemptionWatcher:
  """`reached(step)` is True once the run should save and stop.

  One process: a SIGTERM handler sets a flag. Several processes: JAX's
  preemption service (started by jax.distributed) owns SIGTERM and agrees on
  one step for all processes, so every process saves the same step.
  """

  def __init__(self):
    self.requested = False
    self.multi_process = jax.process_count() > 1
    self.previous = None
    if not self.multi_process and threading.current_thread() is threading.main_thread():
      self.previous = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True

  def reached(self, step):
    if self.multi_process:
      return multihost_utils.reached_preemption_sync_point(step)
    return self.requested

  def close(self):
    if self.previous is not None:
      signal.signal(signal.SIGTERM, self.previous)
      self.previous = None

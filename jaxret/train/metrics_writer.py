"""Writes metrics to `DIR/metrics.jsonl` and TensorBoard event files (TensorFlow-free)."""

import json
import os

import jax
import numpy as np
import tensorboardX

from jaxret import errors
from jaxret import files


def _plain(value):
  value = np.asarray(value)
  return value.item() if value.ndim == 0 else value.tolist()


class MetricWriter:
  """One JSON object per logged step; only process 0 writes.

  On resume from step N, records of later steps (written before an
  interruption and about to be redone) are dropped, so the log has each step once.
  """

  def __init__(self, workdir, resume_step=0):
    self.enabled = jax.process_index() == 0
    if not self.enabled:
      return
    self.path = os.path.join(workdir, 'metrics.jsonl')
    if os.path.exists(self.path):
      with open(self.path) as f:
        kept = [line for line in f if line.strip() and json.loads(line)['step'] <= resume_step]
      with files.atomic_file(self.path) as f:
        f.writelines(kept)
    self.tensorboard = tensorboardX.SummaryWriter(os.path.join(workdir, 'tensorboard'))

  def write(self, step, metrics):
    if not self.enabled or not metrics:
      return
    record = {'step': int(step), **{k: _plain(v) for k, v in metrics.items()}}
    try:
      with open(self.path, 'a') as f:
        f.write(json.dumps(record) + '\n')
    except OSError as e:
      raise errors.RunError(f'cannot write {self.path}: {e.strerror or e}; free disk space or '
                            'pick a writable --workdir') from e
    for name, value in record.items():
      if name != 'step' and isinstance(value, (int, float)):
        self.tensorboard.add_scalar(name, value, int(step))
    self.tensorboard.flush()

  def close(self):
    if not self.enabled:
      return
    try:
      self.tensorboard.close()
    except OSError as e:
      raise errors.RunError(f'cannot write {self.tensorboard.logdir}: {e.strerror or e}; free '
                            'disk space or pick a writable --workdir') from e

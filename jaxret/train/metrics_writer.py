"""Writes metrics to `DIR/metrics.jsonl` and TensorBoard event files (TensorFlow-free)."""

import json
import os

import jax
import numpy as np
import tensorboardX


def _plain(value):
  value = np.asarray(value)
  return value.item() if value.ndim == 0 else value.tolist()


class MetricWriter:
  """One JSON object per logged step; only process 0 writes."""

  def __init__(self, workdir):
    self.enabled = jax.process_index() == 0
    if self.enabled:
      self.path = os.path.join(workdir, 'metrics.jsonl')
      self.tensorboard = tensorboardX.SummaryWriter(os.path.join(workdir, 'tensorboard'))

  def write(self, step, metrics):
    if not self.enabled or not metrics:
      return
    record = {'step': int(step), **{k: _plain(v) for k, v in metrics.items()}}
    with open(self.path, 'a') as f:
      f.write(json.dumps(record) + '\n')
    for name, value in record.items():
      if name != 'step' and isinstance(value, (int, float)):
        self.tensorboard.add_scalar(name, value, int(step))
    self.tensorboard.flush()

  def close(self):
    if self.enabled:
      self.tensorboard.close()

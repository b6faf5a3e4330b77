"""Numeric guards: non-finite losses or gradients stop the run (or skip the step).

The step reports finiteness as device arrays; they are checked lazily, at log
and checkpoint steps (no per-step host sync), and always before a checkpoint is
written, so a poisoned state is never saved. The error names the first bad
step and the quantity: the loss, or the first parameter whose gradient is bad.
"""

import jax
import jax.numpy as jnp
import numpy as np

from jaxret import errors
from jaxret import tree

POLICIES = ('stop', 'skip')


def finite_flags(loss, grads):
  """(all finite, per-parameter gradient finiteness as a (num_leaves,) bool vector)."""
  per_leaf = jnp.stack([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)])
  return jnp.isfinite(loss) & jnp.all(per_leaf), per_leaf


class FiniteGuard:
  """Collects each step's flags and checks them when asked."""

  def __init__(self, params, policy, log):
    self.names = tree.leaf_names(params)
    self.policy = policy
    self.log = log
    self.pending = []

  def record(self, step, metrics):
    """Takes the flags out of the step's metrics (the rest is logged as usual)."""
    self.pending.append((step, metrics.pop('finite'), metrics.pop('finite_grads'),
                         metrics['loss']))

  def check(self):
    """Raises RunError at the first non-finite step ('stop'), or logs skipped ones."""
    pending, self.pending = self.pending, []
    for step, finite, per_leaf, loss in pending:
      if bool(finite):
        continue
      loss = float(loss)
      if not np.isfinite(loss):
        quantity = f'the loss is {loss}'
      else:
        bad = [n for n, ok in zip(self.names, np.asarray(per_leaf)) if not ok]
        quantity = f'the gradient of {bad[0]} is not finite' + (
            f' (and {len(bad) - 1} more parameters)' if len(bad) > 1 else '')
      if self.policy == 'stop':
        raise errors.RunError(
            f'step {step}: {quantity}; stopped without saving it (the last checkpoint is '
            'intact). Lower the learning rate, or set --config.on_nonfinite=skip')
      self.log(f'step {step}: {quantity}; step skipped (parameters unchanged)')

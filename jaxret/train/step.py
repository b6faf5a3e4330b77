"""The training step: one pure function for every method."""

import jax
import optax

from jaxret.train import state as state_lib


def train_step(state: state_lib.TrainState, batch, *, objective, optimizer):
  """One optimizer step on a global batch; returns the new state and metrics.

  `objective(params, extra, batch, rng, step) -> (loss, metrics, extra)` is the
  method (`jaxret/objectives`); it handles the cross-device parts itself.
  """
  rng = jax.random.fold_in(state.rng, state.step)

  def loss_fn(params):
    loss, metrics, extra = objective(params, state.extra, batch, rng, state.step)
    return loss, (metrics, extra)

  (loss, (metrics, extra)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  extra = objective.after_update(params, extra)
  metrics = {**metrics, 'loss': loss, 'grad_norm': optax.global_norm(grads)}
  new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state, extra=extra)
  return new_state, metrics
